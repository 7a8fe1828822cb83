import { BastionError, isBastionError } from '../errors.js'

export interface LineLimits {
  /** Bytes in one line, without its line break. */
  readonly maxLineBytes: number
  readonly maxLines: number
}

export interface Line {
  /** 1-based, counting blank lines too, as an editor shows them. */
  readonly number: number
  readonly text: string
}

/**
 * The lines of `input` (LF or CRLF; a UTF-8 BOM, as some editors write, is dropped). Each line is
 * held only until it is complete, and one longer than `maxLineBytes` fails before it is
 * buffered further, so neither a file without line breaks nor an endless pipe can take
 * the memory. Text that is not UTF-8 fails naming the line instead of turning into U+FFFD.
 */
export async function * boundedLines (input: AsyncIterable<Buffer | string>, name: string, limits: LineLimits): AsyncGenerator<Line> {
  const decoder = new TextDecoder('utf-8', { fatal: true })
  let parts: Buffer[] = []
  let size = 0
  let number = 0

  function complete (): Line {
    number++
    if (number > limits.maxLines) {
      throw new BastionError('BASTION_ERR_INVALID_INPUT', `${name} has more than ${limits.maxLines} lines: split it into several imports`)
    }
    let bytes = Buffer.concat(parts, size)
    parts = []
    size = 0
    if (bytes.at(-1) === 0x0d) bytes = bytes.subarray(0, -1)
    try {
      return { number, text: decoder.decode(bytes) }
    } catch {
      throw new BastionError('BASTION_ERR_INVALID_INPUT', `line ${number}: not UTF-8 text`)
    }
  }

  function append (chunk: Buffer): void {
    size += chunk.length
    if (size > limits.maxLineBytes) {
      throw new BastionError('BASTION_ERR_INVALID_INPUT', `line ${number + 1}: longer than ${limits.maxLineBytes} bytes`)
    }
    if (chunk.length > 0) parts.push(chunk)
  }

  try {
    for await (const data of input) {
      const chunk = typeof data === 'string' ? Buffer.from(data, 'utf8') : data
      // Each pass consumes up to the next line break, so the loop ends within the chunk.
      for (let start = 0; start < chunk.length;) {
        const end = chunk.indexOf(0x0a, start)
        if (end < 0) {
          append(chunk.subarray(start))
          break
        }
        append(chunk.subarray(start, end))
        yield complete()
        start = end + 1
      }
    }
    if (size > 0) yield complete()
  } catch (err) {
    if (isBastionError(err)) throw err
    throw new BastionError('BASTION_ERR_INVALID_INPUT', `cannot read ${name}: ${(err as Error).message}`, { cause: err })
  }
}
