import { existsSync, readFileSync, renameSync } from 'node:fs'
import { basename, dirname, join, resolve } from 'node:path'
import type Database from 'better-sqlite3'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'
import { USERNAME_PATTERN } from '../types.js'
import { assertPrivateSync } from './permissions.js'
import { SQL, isUniqueViolation, toRow } from './sqlite-schema.js'
import type { UserRecord } from './store.js'

/** What one migration moved; `from` is the legacy JSON store beside the database. */
export interface Migration { readonly from: string; readonly to: string; readonly users: number }

const legacyPath = (dbPath: string): string => join(dirname(dbPath), 'users.json')

function bad (from: string, problem: string): BastionError {
  return new BastionError('BASTION_ERR_USER_STORE', `user store ${from}: ${problem}; nothing was migrated: fix the file and start again`)
}

/**
 * The checks the JSON store makes, and the ones it left to chance. Values are never quoted
 * (a hash or a secret in the wrong field must not reach a log), only the entry's index and,
 * once it is known to be a valid name, the user.
 */
function validate (from: string, doc: unknown): UserRecord[] {
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { users?: unknown }).users)) {
    throw bad(from, 'not a mqtt-bastion users file (an object with a users array)')
  }
  const byName = new Map<string, string>()
  return ((doc as { users: unknown[] }).users).map((u, i) => {
    const at = `users[${i}]`
    if (typeof u !== 'object' || u === null || Array.isArray(u)) throw bad(from, `${at} is not an object`)
    const x = u as Record<string, unknown>
    if (typeof x.username !== 'string' || !USERNAME_PATTERN.test(x.username)) {
      throw bad(from, `${at}.username must be 1-64 letters, digits, "_", "." or "-"`)
    }
    const name = x.username
    const field = (k: string, ok: boolean, what: string): void => { if (!ok) throw bad(from, `${at} (user ${name}): ${k} must be ${what}`) }
    field('passwordHash', typeof x.passwordHash === 'string' && x.passwordHash !== '', 'a non-empty string')
    field('totpSecret', x.totpSecret === undefined || typeof x.totpSecret === 'string', 'a string')
    field('enabled', x.enabled === undefined || typeof x.enabled === 'boolean', 'true or false')
    field('lastStep', x.lastStep === undefined || (Number.isSafeInteger(x.lastStep) && (x.lastStep as number) >= 0), 'a whole number >= 0')
    field('createdAt', x.createdAt === undefined || typeof x.createdAt === 'string', 'a string')
    // The database compares names case-insensitively; which of two look-alikes to keep is the operator's call.
    const other = byName.get(name.toLowerCase())
    if (other !== undefined) throw bad(from, `users ${other} and ${name} differ only in case (or are repeated); the sqlite store allows one of them`)
    byName.set(name.toLowerCase(), name)
    return {
      username: name,
      passwordHash: x.passwordHash as string,
      ...(x.totpSecret === undefined ? {} : { totpSecret: x.totpSecret as string }),
      enabled: x.enabled !== false,
      createdAt: (x.createdAt as string | undefined) ?? '',
      ...(x.lastStep === undefined ? {} : { lastStep: x.lastStep as number })
    }
  })
}

function parse (from: string): unknown {
  let text: string
  try {
    text = readFileSync(from, 'utf8')
  } catch (err) {
    throw bad(from, `cannot be read: ${(err as Error).message}`)
  }
  try {
    return JSON.parse(text)
  } catch (err) {
    // V8's message quotes the text around the fault, which may be a hash or a secret.
    const at = /at position (\d+)/.exec((err as Error).message)?.[1]
    throw bad(from, `not valid JSON${at === undefined ? '' : ` (at character ${at})`}`)
  }
}

/**
 * Moves the legacy JSON store's users into the database once, in one IMMEDIATE transaction:
 * either every user arrives together with the meta record or nothing changes. The meta check
 * inside the transaction is what stops a second process opening at the same moment (or a
 * later start whose rename failed) from migrating again. Synchronous: the caller retries it
 * when the database is busy. Returns undefined when there is nothing to do.
 */
export function migrateLegacyJson (db: Database.Database, dbPath: string, log?: Logger): Migration | undefined {
  const from = legacyPath(dbPath)
  if (resolve(from) === resolve(dbPath) || !existsSync(from)) return undefined
  const getMeta = db.prepare(SQL.getMeta)
  return db.transaction((): Migration | undefined => {
    const done = getMeta.get('migrated_from') as { value: string } | undefined
    if (done !== undefined) {
      log?.warn({ event: 'store.legacy_ignored', file: from, to: dbPath }, `${from} is ignored: users were migrated into ${dbPath} before; change users with mqtt-bastion user`)
      return undefined
    }
    assertPrivateSync(from, 'user store')
    const users = validate(from, parse(from))
    const insert = db.prepare(SQL.insert)
    for (const u of users) {
      try {
        insert.run(toRow(u))
      } catch (err) {
        if (isUniqueViolation(err)) throw bad(from, `user ${u.username} is already in ${dbPath}`)
        throw err
      }
    }
    const setMeta = db.prepare(SQL.setMeta)
    setMeta.run('migrated_from', from)
    setMeta.run('migrated_users', String(users.length))
    setMeta.run('migrated_at', new Date().toISOString())
    return { from, to: dbPath, users: users.length }
  }).immediate()
}

/**
 * After the commit: the JSON file is kept (a backup the operator may want) under a name that
 * no release reads. A failed rename is only reported; the meta record already prevents a rerun.
 */
export function retireLegacyJson (m: Migration, log?: Logger): void {
  let kept = `${m.from}.migrated`
  try {
    renameSync(m.from, kept)
  } catch (err) {
    kept = m.from
    log?.warn({ event: 'store.migrate_rename_failed', from: m.from, reason: (err as Error).message }, `could not rename ${m.from} after migrating it; it is ignored from now on`)
  }
  log?.info({ event: 'store.migrated', from: m.from, to: m.to, users: m.users },
    `migrated ${m.users} users from ${m.from} into ${m.to} (the JSON file is kept as ${basename(kept)})`)
}
