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
  // Prepared once per connection: bind runs on every login.
  const prepared = new WeakMap<Database.Database, ReturnType<typeof prepare>>()
  function prepare (db: Database.Database) {
    const owner = db.prepare<[string], OwnerRow>(SQL.owner)
    const touch = db.prepare(SQL.touchId)
    const insert = db.prepare(SQL.bindId)
    const trim = db.prepare(SQL.trimIds)
    // IMMEDIATE: two first logins with one id at once, even from two processes: one binds it.
    const claim = db.transaction((clientId: string, user: string, t: number): string => {
      const row = owner.get(clientId)
      if (row !== undefined && row.username.toLowerCase() !== user.toLowerCase()) return row.username
      if (row !== undefined) {
        touch.run(t, clientId)
        return row.username
      }
      insert.run(clientId, user, t)
      trim.run({ user, keep: MAX_IDS_PER_USER })
      return user
    })
    return { owner, claim, release: db.prepare(SQL.releaseId), list: db.prepare<[], IdRow>(SQL.listIds), listUser: db.prepare<[string], IdRow>(SQL.listUserIds) }
  }
  const statements = (db: Database.Database): ReturnType<typeof prepare> => {
    let p = prepared.get(db)
    if (p === undefined) prepared.set(db, p = prepare(db))
    return p
  }
  return {
    async bind (clientId, user) {
      return await run((db) => {
        const st = statements(db)
        const t = now()
        const found = st.owner.get(clientId)
        // Most logins only read: the owner's own id, seen within the hour.
        if (found !== undefined && (found.username.toLowerCase() !== user.toLowerCase() || t - found.last_seen < TOUCH_MS)) return found.username
        return st.claim.immediate(clientId, user, t)
      })
    },
    async release (clientId) {
      return await run((db) => statements(db).release.run(clientId).changes === 1)
    },
    async list (user) {
      return await run((db) => (user === undefined ? statements(db).list.all() : statements(db).listUser.all(user)).map(toOwner))
    }
  }
}
