import { createLogger, type Logger } from '../log.js'

// What a store tells the operator that a CLI command must not swallow: a users.json migrated
// into the SQLite database (the file is renamed) happens at the first command that opens it.
const TOLD = new Set(['store.migrated', 'store.migrate_rename_failed'])

/**
 * The logger a CLI command gives the user store: quiet, except the events above, each as one
 * `mqtt-bastion: ...` line on stderr (stdout carries the command's own output, e.g. export).
 * Failures need nothing here: they reach the user as the command's error line.
 */
export function cliStoreLogger (): Logger {
  return createLogger({
    level: 'info',
    destination: {
      write (line: string): void {
        let entry: { event?: unknown; msg?: unknown }
        try { entry = JSON.parse(line) } catch { return }
        if (typeof entry.event === 'string' && TOLD.has(entry.event)) process.stderr.write(`mqtt-bastion: ${String(entry.msg)}\n`)
      }
    }
  })
}
