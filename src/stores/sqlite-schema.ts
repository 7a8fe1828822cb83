import type Database from 'better-sqlite3'
import { BastionError } from '../errors.js'
import type { UserRecord } from './store.js'

/** Bumped when the layout changes; a database from a newer release is refused, not guessed at. */
export const SCHEMA_VERSION = 1

/**
 * The MySQL store's table with its default column names, so rows move between the two as they
 * are. NOCASE as MySQL's usual collations: `Alice` and `alice` cannot both exist, and a login as
 * either finds the one row (ACL branches are per user; two look-alike users would be confusing).
 */
const DDL = `
CREATE TABLE IF NOT EXISTS users (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  username TEXT NOT NULL UNIQUE COLLATE NOCASE,
  password TEXT NOT NULL,
  totp_secret TEXT NOT NULL,
  enabled INTEGER NOT NULL DEFAULT 1,
  last_step INTEGER NULL,
  created_at TEXT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS client_ids (
  client_id TEXT PRIMARY KEY,
  username TEXT NOT NULL COLLATE NOCASE,
  last_seen INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS client_ids_by_user ON client_ids (username, last_seen);
`

const COLUMNS = 'username, password, totp_secret, enabled, last_step, created_at'

export const SQL = {
  find: `SELECT ${COLUMNS} FROM users WHERE username = ?`,
  insert: `INSERT INTO users (${COLUMNS}) VALUES (@username, @password, @totp_secret, @enabled, @last_step, @created_at)`,
  // Only one of several processes can move the step: the claim is the UPDATE's row count.
  claim: 'UPDATE users SET last_step = @step WHERE username = @username AND (last_step IS NULL OR last_step < @step)',
  // NULL means "not in the patch": one statement for every combination of fields.
  update: 'UPDATE users SET password = coalesce(@password, password), totp_secret = coalesce(@totp_secret, totp_secret), enabled = coalesce(@enabled, enabled) WHERE username = @username',
  remove: 'DELETE FROM users WHERE username = ?',
  list: `SELECT ${COLUMNS} FROM users ORDER BY username`,
  ping: 'SELECT 1 FROM users LIMIT 1',
  owner: 'SELECT username, last_seen FROM client_ids WHERE client_id = ?',
  bindId: 'INSERT INTO client_ids (client_id, username, last_seen) VALUES (?, ?, ?)',
  touchId: 'UPDATE client_ids SET last_seen = ? WHERE client_id = ?',
  // Keeps a user's most recently seen ids; the rest are released.
  trimIds: 'DELETE FROM client_ids WHERE username = @user AND client_id NOT IN (SELECT client_id FROM client_ids WHERE username = @user ORDER BY last_seen DESC LIMIT @keep)',
  releaseId: 'DELETE FROM client_ids WHERE client_id = ?',
  releaseUser: 'DELETE FROM client_ids WHERE username = ?',
  listIds: 'SELECT client_id, username, last_seen FROM client_ids ORDER BY last_seen DESC',
  listUserIds: 'SELECT client_id, username, last_seen FROM client_ids WHERE username = ? ORDER BY last_seen DESC',
  getMeta: 'SELECT value FROM meta WHERE key = ?',
  setMeta: 'INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)',
  initMeta: 'INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)'
} as const

export interface UserRow {
  username: string
  password: string
  totp_secret: string
  enabled: number
  last_step: number | null
  created_at: string | null
}

/** A user without a TOTP secret is kept as '' (the column is NOT NULL) and read back as none. */
export function toRecord (row: UserRow): UserRecord {
  return {
    username: row.username,
    passwordHash: row.password,
    ...(row.totp_secret === '' ? {} : { totpSecret: row.totp_secret }),
    enabled: row.enabled === 1,
    createdAt: row.created_at ?? '',
    ...(row.last_step === null ? {} : { lastStep: row.last_step })
  }
}

export function toRow (r: UserRecord): UserRow {
  return {
    username: r.username,
    password: r.passwordHash,
    totp_secret: r.totpSecret ?? '',
    enabled: r.enabled ? 1 : 0,
    last_step: r.lastStep ?? null,
    created_at: r.createdAt === '' ? null : r.createdAt
  }
}

const code = (err: unknown): string => String((err as { code?: unknown }).code ?? '')

/** Another connection holds the lock (SQLITE_BUSY, _SNAPSHOT, _RECOVERY, SQLITE_LOCKED...). */
export const isBusy = (err: unknown): boolean => /^SQLITE_(BUSY|LOCKED)/.test(code(err))
export const isUniqueViolation = (err: unknown): boolean => code(err) === 'SQLITE_CONSTRAINT_UNIQUE'

/**
 * Per-connection settings. busy_timeout 0: better-sqlite3 is synchronous, so SQLite's own
 * waiting would stop the broker's event loop; the store retries a busy database asynchronously.
 * WAL lets the CLI write while the broker reads, with no lock files.
 */
export function applyPragmas (db: Database.Database, path: string): void {
  db.pragma('busy_timeout = 0')
  const mode = db.pragma('journal_mode = WAL', { simple: true })
  if (String(mode).toLowerCase() !== 'wal') {
    throw new BastionError('BASTION_ERR_USER_STORE', `user store ${path}: cannot use the WAL journal (journal_mode stays ${String(mode)}); is it on a network file system?`)
  }
  db.pragma('synchronous = NORMAL')
  db.pragma('foreign_keys = ON')
}

/** Creates the tables when missing; refuses a database written by a newer release. */
export function ensureSchema (db: Database.Database, path: string): void {
  db.transaction(() => {
    db.exec(DDL)
    db.prepare(SQL.initMeta).run('schema_version', String(SCHEMA_VERSION))
    const found = Number((db.prepare(SQL.getMeta).get('schema_version') as { value: string }).value)
    if (!(found <= SCHEMA_VERSION)) {
      throw new BastionError('BASTION_ERR_USER_STORE', `user store ${path}: schema version ${String(found)} is newer than this mqtt-bastion understands (${SCHEMA_VERSION}); upgrade mqtt-bastion`)
    }
  }).immediate()
}
