import type Database from 'better-sqlite3'
import { SQL } from './sqlite-schema.js'
import type { ClientIdOwner, ClientIdOwners } from './store.js'

/** Ids one user keeps bound; past it the least recently seen is released. */
export const MAX_IDS_PER_USER = 32
// A binding's last use is written at most this often: most logins only read.
const TOUCH_MS = 3_600_000

interface OwnerRow { username: string; last_seen: number }
interface IdRow { client_id: string; username: string; last_seen: number }

/**
 * Client id owners in the user store's own database, so the CLI sees and releases what the
 * broker bound, and a restart keeps them. `run` is the store's busy-retrying runner.
 */
export function createSqliteClientIds (run: <T>(step: (db: Database.Database) => T) => Promise<T>, now = Date.now): ClientIdOwners {
  const toOwner = (r: IdRow): ClientIdOwner => ({ clientId: r.client_id, user: r.username, lastSeen: new Date(r.last_seen).toISOString() })
  return {
    async bind (clientId, user) {
      return await run((db) => {
        const t = now()
        const found = db.prepare<[string], OwnerRow>(SQL.owner).get(clientId)
        if (found !== undefined && (found.username.toLowerCase() !== user.toLowerCase() || t - found.last_seen < TOUCH_MS)) return found.username
        // IMMEDIATE: two first logins with one id at once, even from two processes: one binds it.
        return db.transaction(() => {
          const row = db.prepare<[string], OwnerRow>(SQL.owner).get(clientId)
          if (row !== undefined && row.username.toLowerCase() !== user.toLowerCase()) return row.username
          if (row !== undefined) {
            db.prepare(SQL.touchId).run(t, clientId)
            return row.username
          }
          db.prepare(SQL.bindId).run(clientId, user, t)
          db.prepare(SQL.trimIds).run({ user, keep: MAX_IDS_PER_USER })
          return user
        }).immediate()
      })
    },
    async release (clientId) {
      return await run((db) => db.prepare(SQL.releaseId).run(clientId).changes === 1)
    },
    async list (user) {
      return await run((db) => (user === undefined
        ? db.prepare<[], IdRow>(SQL.listIds).all()
        : db.prepare<[string], IdRow>(SQL.listUserIds).all(user)).map(toOwner))
    }
  }
}
