import { createInterface } from 'node:readline'
import { Writable } from 'node:stream'

/** Reads a password: hidden at a terminal, or the first line of piped standard input. */
export async function readPassword (label: string): Promise<string> {
  const tty = process.stdin.isTTY === true
  let muted = false
  const output = new Writable({
    write (chunk: Buffer, _enc, cb) {
      if (!muted) process.stderr.write(chunk)
      cb()
    }
  })
  const rl = createInterface({ input: process.stdin, output: tty ? output : undefined, terminal: tty })
  try {
    if (tty) process.stderr.write(label)
    muted = true
    const line = await new Promise<string | undefined>((resolve) => {
      rl.once('line', resolve)
      rl.once('close', () => resolve(undefined))
    })
    if (tty) process.stderr.write('\n')
    return line ?? ''
  } finally {
    rl.close()
  }
}
