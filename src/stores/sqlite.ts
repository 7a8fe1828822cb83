import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs'
import { dirname } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import Database from 'better-sqlite3'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'
import { assertPrivateSync } from './permissions.js'
import { createSqliteClientIds } from './sqlite-client-ids.js'
import { migrateLegacyJson, retireLegacyJson } from './sqlite-migrate.js'
import { SQL, applyPragmas, ensureSchema, isBusy, isUniqueViolation, toRecord, toRow, type UserRow } from './sqlite-schema.js'
import type { UserRecord, UserStore } from './store.js'

export interface SqliteStoreOptions {
  /** The database file; created (0600, its folder 0700) when missing. */
  readonly path: string
  readonly log?: Logger
}

// How long a busy database is waited for, in short sleeps, before the call fails. A write by
// another process holds the lock for milliseconds; seconds means something is stuck.
const BUSY_WAIT_MS = 5_000

interface Handle {
  readonly db: Database.Database
  readonly find: Database.Statement<[string], UserRow>
  readonly insert: Database.Statement<[UserRow]>
  readonly claim: Database.Statement<[{ step: number; username: string }]>
  readonly update: Database.Statement<[{ username: string; password: string | null; totp_secret: string | null; enabled: number | null }]>
  readonly remove: Database.Statement<[string]>
  readonly list: Database.Statement<[], UserRow>
  readonly ping: Database.Statement<[]>
  readonly addMany: Database.Transaction<(records: readonly UserRecord[]) => void>
}

/**
 * The embedded store: one SQLite database (WAL) that the broker and the CLI write at once,
 * each change its own transaction, no lock files. On first open it takes over the legacy JSON
 * store (`users.json` in the same folder) once. Every failure is BASTION_ERR_USER_STORE naming
 * the file: login treats it as a fault, never as an unknown user.
 *
 * The database is opened on first use, so a busy database at start is waited for without
 * blocking; an open that fails is tried again by the next call.
 *
 * @example
 *   const store = createSqliteStore({ path: 'data/users.db', log })
 *   const alice = await store.find('alice')
 */
export function createSqliteStore (opts: SqliteStoreOptions): UserStore {
  const { path, log } = opts
  let handle: Handle | undefined
  let opening: Promise<Handle> | undefined
  let closed = false

  function fault (err: unknown): BastionError {
    if (err instanceof BastionError) return err
    return new BastionError('BASTION_ERR_USER_STORE', `user store ${path}: ${(err as Error).message}`, { cause: err })
  }

  /** Runs a synchronous database step, retrying it while another connection holds the lock. */
  async function retry<T> (step: () => T): Promise<T> {
    const deadline = Date.now() + BUSY_WAIT_MS
    for (let attempt = 0; ; attempt++) {
      try {
        return step()
      } catch (err) {
        if (!isBusy(err)) throw fault(err)
        if (Date.now() >= deadline) {
          throw new BastionError('BASTION_ERR_USER_STORE', `user store ${path} is busy: ${(err as Error).message} (still locked by another connection after ${BUSY_WAIT_MS / 1000} s)`, { cause: err })
        }
        // Randomized so that two waiting processes do not wake in step; capped to stay responsive.
        await sleep(1 + Math.random() * Math.min(50, 2 ** attempt))
      }
    }
  }

  /** Creates the file ourselves so it is 0600 from the start; SQLite gives -wal/-shm its mode. */
  function createFile (): void {
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
      closeSync(openSync(path, 'wx', 0o600))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fault(err)
    }
    for (const f of [path, `${path}-wal`, `${path}-shm`]) {
      if (f === path || existsSync(f)) assertPrivateSync(f, 'user store')
    }
  }

  async function open (): Promise<Handle> {
    createFile()
    let db: Database.Database
    try {
      db = new Database(path, { fileMustExist: true })
    } catch (err) {
      throw fault(err)
    }
    try {
      await retry(() => applyPragmas(db, path))
      await retry(() => ensureSchema(db, path))
      const moved = await retry(() => migrateLegacyJson(db, path, log))
      if (moved !== undefined) retireLegacyJson(moved, log)
      const h: Handle = {
        db,
        find: db.prepare<[string], UserRow>(SQL.find),
        insert: db.prepare<[UserRow]>(SQL.insert),
        claim: db.prepare(SQL.claim),
        update: db.prepare(SQL.update),
        remove: db.prepare(SQL.remove),
        list: db.prepare<[], UserRow>(SQL.list),
        ping: db.prepare(SQL.ping),
        addMany: db.transaction((records: readonly UserRecord[]) => {
          const batch = new Set<string>()
          for (const r of records) {
            const key = r.username.toLowerCase()
            insertOne(h, r, batch.has(key))
            batch.add(key)
          }
        })
      }
      return h
    } catch (err) {
      db.close()
      throw fault(err)
    }
  }

  function insertOne (h: Handle, r: UserRecord, repeated = false): void {
    try {
      h.insert.run(toRow(r))
    } catch (err) {
      if (!isUniqueViolation(err)) throw err
      throw new BastionError('BASTION_ERR_USER_EXISTS', repeated ? `user ${r.username} appears twice in the batch` : `user ${r.username} already exists`)
    }
  }

  async function ready (): Promise<Handle> {
    if (handle !== undefined) return handle
    if (closed) throw new BastionError('BASTION_ERR_USER_STORE', `user store ${path} is closed`)
    opening ??= open().then((h) => {
      if (closed) {
        h.db.close()
        throw new BastionError('BASTION_ERR_USER_STORE', `user store ${path} is closed`)
      }
      handle = h
      return h
    }, (err: unknown) => {
      opening = undefined
      throw err
    })
    return await opening
  }

  /** Opens if needed, then runs one synchronous step with busy retries. */
  async function run<T> (step: (h: Handle) => T): Promise<T> {
    const h = await ready()
    return await retry(() => step(h))
  }

  function unknown (username: string): BastionError {
    return new BastionError('BASTION_ERR_USER_UNKNOWN', `no such user: ${username}`)
  }

  return {
    clientIds: createSqliteClientIds(async (step) => await run((h) => step(h.db))),
    async find (username) {
      const row = await run((h) => h.find.get(username))
      return row === undefined ? undefined : toRecord(row)
    },
    async claimStep (username, step) {
      return await run((h) => h.claim.run({ step, username }).changes === 1)
    },
    async add (record) {
      await run((h) => { insertOne(h, record) })
    },
    async addMany (records) {
      // IMMEDIATE: the write lock is taken up front, so a busy database fails before any work.
      await run((h) => { h.addMany.immediate(records) })
    },
    async update (username, patch) {
      const changes = await run((h) => h.update.run({
        username,
        password: patch.passwordHash ?? null,
        totp_secret: patch.totpSecret ?? null,
        enabled: patch.enabled === undefined ? null : patch.enabled ? 1 : 0
      }).changes)
      if (changes === 0) throw unknown(username)
    },
    async remove (username) {
      // The user's client ids go with it: a new user of the same name starts with none.
      const changes = await run((h) => h.db.transaction(() => {
        h.db.prepare(SQL.releaseUser).run(username)
        return h.remove.run(username).changes
      }).immediate())
      if (changes === 0) throw unknown(username)
    },
    async list () {
      return (await run((h) => h.list.all())).map(toRecord)
    },
    async ping () {
      await run((h) => h.ping.get())
    },
    async close () {
      closed = true
      await opening?.catch(() => {})
      handle?.db.close()
      handle = undefined
    }
  }
}
