import { statSync } from 'node:fs'
import { stat } from 'node:fs/promises'
import { BastionError } from '../errors.js'

function check (mode: number, path: string, what: string): void {
  if ((mode & 0o077) !== 0) {
    throw new BastionError('BASTION_ERR_FILE_PERMISSIONS',
      `${what} ${path} is readable by group or others (mode ${(mode & 0o777).toString(8)}); fix it with: chmod 600 ${path}`)
  }
}

/**
 * Throws when a secret file (private key, user store, password file) can be read by group or
 * others. A missing file passes: whoever opens it reports that with its own message.
 */
export async function assertPrivate (path: string, what: string): Promise<void> {
  let mode: number
  try {
    mode = (await stat(path)).mode
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw err
  }
  check(mode, path, what)
}

/** The start-up twin of assertPrivate, for files parsed synchronously in a factory. */
export function assertPrivateSync (path: string, what: string): void {
  check(statSync(path).mode, path, what)
}
