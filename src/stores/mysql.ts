import { readFileSync } from 'node:fs'
import mysql, { type Pool, type ResultSetHeader, type RowDataPacket } from 'mysql2/promise'
import type { MysqlStoreConfig } from '../config/schema.js'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'
import type { UserPatch, UserRecord, UserStore } from './store.js'

/** Optional columns `mqtt-bastion db migrate` adds; the store works with or without them. */
export type OptionalColumn = 'enabled' | 'lastStep' | 'createdAt'
export const REQUIRED_COLUMNS = ['username', 'password', 'totpSecret'] as const

export interface MysqlStore extends UserStore {
  /** Which optional columns the table has, read from information_schema. */
  columns (): Promise<Set<OptionalColumn>>
  readonly pool: Pool
}

// mysql2's error when `queueLimit` queries already wait for a pooled connection.
const POOL_QUEUE_FULL = 'Queue limit reached.'

// How long a table's shape is trusted before it is read again (db migrate on a live broker).
const SHAPE_TTL_MS = 60_000

export function createMysqlPool (cfg: MysqlStoreConfig): Pool {
  return mysql.createPool({
    host: cfg.host,
    port: cfg.port,
    user: cfg.user,
    ...(cfg.password === undefined ? {} : { password: cfg.password }),
    database: cfg.database,
    connectTimeout: cfg.connectTimeout,
    connectionLimit: cfg.poolSize,
    waitForConnections: true,
    // A login never waits behind more than one pool's worth of others; the rest fail fast.
    queueLimit: cfg.poolSize * 4,
    enableKeepAlive: true,
    dateStrings: false,
    ...(cfg.tls === undefined ? {} : { ssl: { rejectUnauthorized: cfg.tls.rejectUnauthorized, ...(cfg.tls.ca === undefined ? {} : { ca: readFileSync(cfg.tls.ca, 'utf8') }) } })
  })
}

/** mysql2 errors that mean "the server did not answer", worth one retry on a fresh connection. */
function isConnectionError (err: unknown): boolean {
  const e = err as { code?: string; fatal?: boolean }
  return e.fatal === true || ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'PROTOCOL_CONNECTION_LOST', 'ENOTFOUND', 'EHOSTUNREACH'].includes(e.code ?? '')
}

// Rows per INSERT in addMany: far below max_allowed_packet (~200 bytes a row), few round trips.
const INSERT_CHUNK = 500

/**
 * ER_DUP_ENTRY says `Duplicate entry 'NAME' for key ...` with the name of the row being inserted;
 * it is matched back to the batch (as given, else as a case-insensitive collation compares).
 */
function duplicateIn (records: readonly UserRecord[], err: unknown): BastionError {
  const entry = /Duplicate entry '(.*)' for key/s.exec((err as Error).message)?.[1]
  const r = entry === undefined ? undefined : records.find((x) => x.username === entry) ?? records.find((x) => x.username.toLowerCase() === entry.toLowerCase())
  return new BastionError('BASTION_ERR_USER_EXISTS', r === undefined ? 'a user in the batch already exists' : `user ${r.username} already exists`, { cause: err })
}

/** An ISO 8601 createdAt as a Date for the column; null (the database's time) when there is none. */
function createdDate (iso: string): Date | null {
  const d = new Date(iso)
  return iso === '' || Number.isNaN(d.getTime()) ? null : d
}

/**
 * Users in a MySQL/MariaDB table. Existing tables (username, password, totp_secret) work as
 * they are; `enabled`, `last_step` and `created_at` are used when present. Every statement
 * is parameterised; identifiers come only from validated config. Any failure to answer is
 * thrown as BASTION_ERR_BACKEND_UNAVAILABLE (never "no such user"), and an outage and its end
 * are logged once each.
 */
export function createMysqlStore (cfg: MysqlStoreConfig, log: Logger): MysqlStore {
  const pool = createMysqlPool(cfg)
  const id = (c: keyof MysqlStoreConfig['columns']): string => mysql.escapeId(cfg.columns[c])
  const table = mysql.escapeId(cfg.table)
  const where = `${id('username')} = ?`
  let shape: { cols: Set<OptionalColumn>; at: number } | undefined
  let down: string | undefined
  let warnedNoReplayColumn = false
  const localSteps = new Map<string, number>()
  const cache = new Map<string, { record: UserRecord; until: number }>()

  async function query<T> (sql: string, params: unknown[]): Promise<T> {
    const deadline = Date.now() + cfg.queryTimeout
    let lastErr: unknown
    for (let attempt = 0; attempt < 2; attempt++) {
      const left = deadline - Date.now()
      if (left <= 0) break
      let timer: NodeJS.Timeout | undefined
      try {
        // The deadline covers waiting for a pooled connection too, not only the statement.
        const result = await Promise.race([
          pool.query({ sql, timeout: left }, params),
          new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(Object.assign(new Error('query deadline'), { code: 'ETIMEDOUT' })), left) })
        ])
        if (down !== undefined) {
          log.info({ event: 'store.recovered', store: 'mysql', host: cfg.host, port: cfg.port, after: down }, 'user store reachable again')
          down = undefined
        }
        return result[0] as T
      } catch (err) {
        // The statement's own fault (a duplicate key) is an answer, not an outage.
        if ((err as { code?: string }).code === 'ER_DUP_ENTRY') throw err
        // Every pooled connection busy and the pool's own queue full: the database answers,
        // we are asking too much at once (a login flood now looks users up before any bcrypt
        // slot). Busy (0x89, retry), not an outage that refuses everyone and is logged as one.
        if ((err as Error).message === POOL_QUEUE_FULL) {
          throw new BastionError('BASTION_ERR_BUSY', `mysql ${cfg.host}:${cfg.port}/${cfg.database}: ${cfg.poolSize} connections busy and ${cfg.poolSize * 4} queries waiting (auth.store.poolSize)`)
        }
        lastErr = err
        // A connection the server dropped (restart) fails once; a fresh one may work.
        if (!isConnectionError(err)) break
      } finally {
        clearTimeout(timer)
      }
    }
    const code = (lastErr as { code?: string }).code ?? (lastErr as Error).message
    if (down === undefined) {
      down = code
      log.warn({ event: 'store.unavailable', store: 'mysql', host: cfg.host, port: cfg.port, reason: code }, 'user store unavailable: logins are refused until it answers')
    }
    throw new BastionError('BASTION_ERR_BACKEND_UNAVAILABLE', `mysql ${cfg.host}:${cfg.port}/${cfg.database}: ${code}`, { cause: lastErr })
  }

  async function columns (): Promise<Set<OptionalColumn>> {
    if (shape !== undefined && Date.now() - shape.at < SHAPE_TTL_MS) return shape.cols
    const rows = await query<RowDataPacket[]>('SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?', [cfg.table])
    const present = new Set(rows.map((r) => String(r.name).toLowerCase()))
    const missing = REQUIRED_COLUMNS.filter((c) => !present.has(cfg.columns[c].toLowerCase()))
    if (missing.length > 0) {
      throw new BastionError('BASTION_ERR_BACKEND_UNAVAILABLE', `mysql table ${cfg.database}.${cfg.table} lacks column(s) ${missing.map((c) => cfg.columns[c]).join(', ')}; run mqtt-bastion db check`)
    }
    const cols = new Set((['enabled', 'lastStep', 'createdAt'] as const).filter((c) => present.has(cfg.columns[c].toLowerCase())))
    shape = { cols, at: Date.now() }
    return cols
  }

  function unavailable (err: unknown): BastionError {
    if (err instanceof BastionError) return err
    const code = (err as { code?: string }).code ?? (err as Error).message
    return new BastionError('BASTION_ERR_BACKEND_UNAVAILABLE', `mysql ${cfg.host}:${cfg.port}/${cfg.database}: ${code}`, { cause: err })
  }

  function toRecord (row: RowDataPacket, cols: Set<OptionalColumn>): UserRecord {
    const created = cols.has('createdAt') ? row.createdAt as unknown : undefined
    const step = cols.has('lastStep') ? row.lastStep as unknown : undefined
    return {
      username: String(row.username),
      passwordHash: String(row.password),
      totpSecret: String(row.totpSecret).replace(/\s+/g, '').toUpperCase(),
      // A NULL in an `enabled` column is not a yes: deny by default.
      enabled: cols.has('enabled') ? Number(row.enabled) === 1 : true,
      createdAt: created instanceof Date ? created.toISOString() : created == null ? '' : String(created),
      ...(step == null ? {} : { lastStep: Number(step) })
    }
  }

  function select (cols: Set<OptionalColumn>): string {
    const extra = [...cols].map((c) => `, ${id(c)} AS ${c}`).join('')
    return `SELECT ${id('username')} AS username, ${id('password')} AS password, ${id('totpSecret')} AS totpSecret${extra} FROM ${table}`
  }

  function needColumn (cols: Set<OptionalColumn>, c: OptionalColumn, why: string): void {
    if (!cols.has(c)) {
      throw new BastionError('BASTION_ERR_USER_STORE', `${why} needs column ${cfg.columns[c]} in ${cfg.table}; run mqtt-bastion db migrate`)
    }
  }

  return {
    pool,
    columns,
    async find (username) {
      const hit = cache.get(username)
      if (hit !== undefined && hit.until > Date.now()) return hit.record
      const cols = await columns()
      const rows = await query<RowDataPacket[]>(`${select(cols)} WHERE ${where} LIMIT 1`, [username])
      const row = rows[0]
      if (row === undefined) {
        cache.delete(username)
        return undefined
      }
      const record = toRecord(row, cols)
      if (cfg.cacheTtl > 0) cache.set(username, { record, until: Date.now() + cfg.cacheTtl * 1000 })
      return record
    },
    async claimStep (username, step) {
      const cols = await columns()
      if (!cols.has('lastStep')) {
        // Without the column a claim can only be atomic within this process.
        if (!warnedNoReplayColumn) {
          warnedNoReplayColumn = true
          log.warn({ event: 'store.replay_local_only', table: cfg.table }, `no ${cfg.columns.lastStep} column: replay protection covers this process only; run mqtt-bastion db migrate`)
        }
        if (step <= (localSteps.get(username) ?? -1)) return false
        localSteps.set(username, step)
        return true
      }
      // Atomic across every broker sharing the database: only one UPDATE can move the step.
      const r = await query<ResultSetHeader>(
        `UPDATE ${table} SET ${id('lastStep')} = ? WHERE ${where} AND (${id('lastStep')} IS NULL OR ${id('lastStep')} < ?)`,
        [step, username, step])
      return r.affectedRows === 1
    },
    async add (record) {
      const cols = await columns()
      const names = [id('username'), id('password'), id('totpSecret')]
      const values: unknown[] = [record.username, record.passwordHash, record.totpSecret]
      if (cols.has('enabled')) { names.push(id('enabled')); values.push(record.enabled ? 1 : 0) } else if (!record.enabled) needColumn(cols, 'enabled', 'a disabled user')
      try {
        await query(`INSERT INTO ${table} (${names.join(', ')}) VALUES (${values.map(() => '?').join(', ')})`, values)
      } catch (err) {
        if ((err as { code?: string }).code === 'ER_DUP_ENTRY') {
          throw new BastionError('BASTION_ERR_USER_EXISTS', `user ${record.username} already exists`)
        }
        throw err
      }
    },
    async addMany (records) {
      if (records.length === 0) return
      const cols = await columns()
      const names = [id('username'), id('password'), id('totpSecret')]
      if (cols.has('enabled')) names.push(id('enabled'))
      else if (records.some((r) => !r.enabled)) needColumn(cols, 'enabled', 'a disabled user')
      // Moving users between stores keeps their last TOTP step: a used code stays used.
      if (cols.has('lastStep')) names.push(id('lastStep'))
      // An import keeps when each user was created (an export reads back what was imported);
      // a record without a valid date gets the database's own time.
      const marks = names.map(() => '?')
      if (cols.has('createdAt')) { names.push(id('createdAt')); marks.push('COALESCE(?, CURRENT_TIMESTAMP)') }
      const row = `(${marks.join(', ')})`
      const conn = await pool.getConnection().catch((err: unknown) => { throw unavailable(err) })
      try {
        await conn.beginTransaction()
        for (let i = 0; i < records.length; i += INSERT_CHUNK) {
          const chunk = records.slice(i, i + INSERT_CHUNK)
          const values: unknown[] = []
          for (const r of chunk) {
            values.push(r.username, r.passwordHash, r.totpSecret)
            if (cols.has('enabled')) values.push(r.enabled ? 1 : 0)
            if (cols.has('lastStep')) values.push(r.lastStep ?? null)
            if (cols.has('createdAt')) values.push(createdDate(r.createdAt))
          }
          await conn.query({ sql: `INSERT INTO ${table} (${names.join(', ')}) VALUES ${chunk.map(() => row).join(', ')}`, timeout: cfg.queryTimeout }, values)
        }
        await conn.commit()
      } catch (err) {
        await conn.rollback().catch(() => {})
        if ((err as { code?: string }).code === 'ER_DUP_ENTRY') throw duplicateIn(records, err)
        throw unavailable(err)
      } finally {
        conn.release()
      }
    },
    async update (username, patch: UserPatch) {
      const cols = await columns()
      const sets: string[] = []
      const values: unknown[] = []
      if (patch.passwordHash !== undefined) { sets.push(`${id('password')} = ?`); values.push(patch.passwordHash) }
      if (patch.totpSecret !== undefined) { sets.push(`${id('totpSecret')} = ?`); values.push(patch.totpSecret) }
      if (patch.enabled !== undefined) {
        needColumn(cols, 'enabled', 'enabling or disabling users')
        sets.push(`${id('enabled')} = ?`)
        values.push(patch.enabled ? 1 : 0)
      }
      if (sets.length === 0) return
      cache.delete(username)
      const r = await query<ResultSetHeader>(`UPDATE ${table} SET ${sets.join(', ')} WHERE ${where}`, [...values, username])
      if (r.affectedRows === 0) throw new BastionError('BASTION_ERR_USER_UNKNOWN', `no such user: ${username}`)
    },
    async remove (username) {
      cache.delete(username)
      const r = await query<ResultSetHeader>(`DELETE FROM ${table} WHERE ${where}`, [username])
      if (r.affectedRows === 0) throw new BastionError('BASTION_ERR_USER_UNKNOWN', `no such user: ${username}`)
    },
    async list () {
      const cols = await columns()
      const rows = await query<RowDataPacket[]>(`${select(cols)} ORDER BY ${id('username')}`, [])
      return rows.map((r) => toRecord(r, cols))
    },
    async ping () {
      shape = undefined
      await columns()
    },
    /** SIGHUP: the table's columns (after `db migrate`) and every cached row are read again. */
    async reload () {
      shape = undefined
      cache.clear()
      await columns()
    },
    async close () {
      await pool.end()
    }
  }
}
