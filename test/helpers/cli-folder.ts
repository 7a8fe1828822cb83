// The built CLI run to completion in a folder of its own, with standard input piped in:
// for commands that read files or pipes (`user import -`, a piped password).
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
// A run that takes longer than this hangs: it is killed, and its caller sees code null.
const RUN_MS = 60_000

export interface CliRun { stdout: string; stderr: string; code: number | null }

/** `root/name` with a bastion.yaml holding `config`; the default names no store: data/users.db. */
export function cliFolder (root: string, name: string, config = 'log: { level: warn }\n'): string {
  const dir = join(root, name)
  mkdirSync(dir)
  writeFileSync(join(dir, 'bastion.yaml'), config)
  return dir
}

/** `mqtt-bastion ARGS --config DIR/bastion.yaml` in DIR, with `input` on standard input. */
export async function runCli (dir: string, args: string[], input?: string | Buffer): Promise<CliRun> {
  const child = spawn(process.execPath, [CLI, ...args, '--config', join(dir, 'bastion.yaml')], {
    cwd: dir, env: { ...process.env, BASTION_CONFIG: '' }, stdio: ['pipe', 'pipe', 'pipe']
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s })
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
  child.stdin.on('error', () => {}) // a CLI that fails before reading closes its end early
  child.stdin.end(input)
  const timer = setTimeout(() => child.kill('SIGKILL'), RUN_MS)
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  clearTimeout(timer)
  return { stdout, stderr, code }
}
