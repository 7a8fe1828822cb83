import { readFileSync, statSync } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { BastionError } from '../errors.js'
import { USERNAME_PATTERN } from '../types.js'
import { MOSQUITTO_DUMMY_HASH, isMosquittoHash, mosquittoDummyHashLike } from '../crypto/mosquitto-hash.js'
import { isValidSecret } from '../crypto/totp.js'
import { assertPrivate, assertPrivateSync } from './permissions.js'
import type { UserRecord, UserStore } from './store.js'

export interface MosquittoPasswdOptions {
  /** A Mosquitto `password_file`, written by `mosquitto_passwd`. */
  readonly path: string
  /** Optional `user:BASE32SECRET` lines giving TOTP secrets to users of the password file. */
  readonly totpFile?: string
}

export type MosquittoPasswdStore = UserStore & { reload (): Promise<void> }

export const MOSQUITTO_PASSWD_READ_ONLY =
  'the mosquitto-passwd store is read-only: change it with mosquitto_passwd and reload (SIGHUP)'

interface Account { readonly hash: string; readonly totpSecret?: string }
interface Loaded { readonly users: ReadonlyMap<string, Account>; readonly createdAt: string; readonly dummyHash: string }
interface Text { readonly path: string; readonly text: string; readonly mtime: Date }

function configError (what: string, path: string, line: number, problem: string): BastionError {
  return new BastionError('BASTION_ERR_CONFIG', `${what} ${path}:${line}: ${problem}`)
}

/**
 * The lines worth reading, numbered from 1. Matches Mosquitto 2.0 (src/security_default.c
 * pwfile__parse): a `#` line is a comment, a line without `:` (so also a blank one) is not an
 * entry, and blanks around the user and the hash are trimmed (CRLF files work). Where Mosquitto
 * skips or drops a bad line with a log line, we refuse the file: a user who silently cannot log
 * in, or a plain-text password sitting in the file, is a mistake to fix, not to run with.
 */
function* entries (src: Text, what: string): Generator<{ line: number; user: string; value: string }> {
  const lines = src.text.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const raw = (lines[i] ?? '').trim()
    if (raw === '' || raw.startsWith('#')) continue
    const line = i + 1
    const colon = raw.indexOf(':')
    // Never quote the line: it may be a password typed in the wrong place.
    if (colon < 0) throw configError(what, src.path, line, 'not a user:value line')
    const user = raw.slice(0, colon).trim()
    const value = raw.slice(colon + 1).trim()
    if (!USERNAME_PATTERN.test(user)) {
      throw configError(what, src.path, line, 'user name must be 1-64 letters, digits, "_", "." or "-" (other characters could leave the user\'s ACL branch)')
    }
    yield { line, user, value }
  }
}

function hashProblem (value: string): string {
  if (value.startsWith('$argon2')) return 'argon2id hash (Mosquitto 2.1 default) cannot be verified here; set it again with mosquitto_passwd -H sha512-pbkdf2'
  if (/^\$[67]\$/.test(value)) return `malformed $${value[1] ?? ''}$ hash`
  if (value.startsWith('$')) return 'unknown hash kind; only mosquitto_passwd $6$ (sha512) and $7$ (sha512-pbkdf2) hashes are understood'
  return 'not a password hash (a plain-text password? hash the file with mosquitto_passwd -U)'
}

function parse (pw: Text, totp: Text | undefined): Loaded {
  const hashes = new Map<string, string>()
  for (const { line, user, value } of entries(pw, 'password file')) {
    if (!isMosquittoHash(value)) throw configError('password file', pw.path, line, hashProblem(value))
    // A repeated user: Mosquitto 2.0.11 answers with the last line (uthash puts later entries in
    // front of a bucket; checked against the real broker). mosquitto_passwd itself rewrites or
    // deletes every line of a user, so repeats come only from hand edits. Last line wins here too.
    hashes.delete(user)
    hashes.set(user, value)
  }
  const secrets = new Map<string, string>()
  if (totp !== undefined) {
    const seen = new Map<string, number>()
    for (const { line, user, value } of entries(totp, 'totp file')) {
      // Our own format, so no compatibility to keep: a repeated user is ambiguous and refused.
      const first = seen.get(user)
      if (first !== undefined) throw configError('totp file', totp.path, line, `user already given a secret on line ${first}`)
      seen.set(user, line)
      if (!hashes.has(user)) throw configError('totp file', totp.path, line, `user is not in the password file ${pw.path}`)
      const secret = value.replace(/\s+/g, '').toUpperCase()
      if (!isValidSecret(secret)) throw configError('totp file', totp.path, line, 'secret must be base32 (A-Z, 2-7) of at least 26 characters (128 bits)')
      secrets.set(user, secret)
    }
  }
  const users = new Map<string, Account>()
  for (const [user, hash] of hashes) {
    const totpSecret = secrets.get(user)
    users.set(user, Object.freeze(totpSecret === undefined ? { hash } : { hash, totpSecret }))
  }
  return { users, createdAt: pw.mtime.toISOString(), dummyHash: dummyFor(hashes.values()) }
}

/** A dummy of the kind and cost most users have, so an unknown name costs what a known one does. */
function dummyFor (hashes: Iterable<string>): string {
  const byCost = new Map<string, { hash: string; n: number }>()
  for (const h of hashes) {
    const key = h.startsWith('$6$') ? '$6$' : h.slice(0, h.indexOf('$', 3))
    const e = byCost.get(key)
    byCost.set(key, { hash: e?.hash ?? h, n: (e?.n ?? 0) + 1 })
  }
  let best: { hash: string; n: number } | undefined
  for (const e of byCost.values()) if (best === undefined || e.n > best.n) best = e
  return best === undefined || best.hash.startsWith('$7$101$') ? MOSQUITTO_DUMMY_HASH : mosquittoDummyHashLike(best.hash)
}

function readError (what: string, path: string, err: unknown): BastionError {
  if (err instanceof BastionError) return err
  return new BastionError('BASTION_ERR_CONFIG', `${what} ${path} cannot be read: ${(err as Error).message}`, { cause: err })
}

function readSync (path: string, what: string): Text {
  try {
    assertPrivateSync(path, what)
    return { path, text: readFileSync(path, 'utf8'), mtime: statSync(path).mtime }
  } catch (err) {
    throw readError(what, path, err)
  }
}

async function readAsync (path: string, what: string): Promise<Text> {
  try {
    await assertPrivate(path, what)
    const [text, s] = await Promise.all([readFile(path, 'utf8'), stat(path)])
    return { path, text, mtime: s.mtime }
  } catch (err) {
    throw readError(what, path, err)
  }
}

/**
 * A read-only user store over a Mosquitto 2.0 `password_file` (`$6$`/`$7$` hashes from
 * `mosquitto_passwd`), with TOTP secrets from an optional `totpFile`. As Mosquitto does, the
 * files are parsed once and logins are pure lookups; `reload()` (SIGHUP) parses them again.
 *
 * The first load is synchronous, inside this factory: a missing, group/other-readable or
 * malformed file throws BastionError here (BASTION_ERR_CONFIG naming `file:line`, or
 * BASTION_ERR_FILE_PERMISSIONS), so the broker stops at start with one line. A bad file at
 * `reload()` rejects the same way and the users loaded before stay in force.
 *
 * TOTP replay claims are kept in memory (the files are never written): they last for the life
 * of the process, across reloads.
 *
 * @example
 *   const store = createMosquittoPasswdStore({ path: '/etc/mosquitto/passwd', totpFile: '/etc/mqtt-bastion/totp' })
 *   process.on('SIGHUP', () => { store.reload().catch((err) => log.error(err.message)) })
 */
export function createMosquittoPasswdStore (opts: MosquittoPasswdOptions): MosquittoPasswdStore {
  const { path, totpFile } = opts
  let current = parse(readSync(path, 'password file'), totpFile === undefined ? undefined : readSync(totpFile, 'totp file'))
  const claimed = new Map<string, number>()
  // One reload at a time: a slow read must not overwrite the result of a later one.
  let reloading: Promise<void> = Promise.resolve()

  function record (username: string, a: Account): UserRecord {
    const lastStep = claimed.get(username)
    return {
      username,
      passwordHash: a.hash,
      ...(a.totpSecret === undefined ? {} : { totpSecret: a.totpSecret }),
      enabled: true,
      createdAt: current.createdAt,
      ...(lastStep === undefined ? {} : { lastStep })
    }
  }

  const readOnly = (): Promise<never> => Promise.reject(new BastionError('BASTION_ERR_INVALID_INPUT', MOSQUITTO_PASSWD_READ_ONLY))

  return {
    readOnly: MOSQUITTO_PASSWD_READ_ONLY,
    get dummyHash () { return current.dummyHash },
    async find (username) {
      const a = current.users.get(username)
      return a === undefined ? undefined : record(username, a)
    },
    async claimStep (username, step) {
      // Check and set with no await between them: two logins with one code cannot both pass.
      if (step <= (claimed.get(username) ?? -1)) return false
      claimed.set(username, step)
      return true
    },
    add: readOnly,
    addMany: readOnly,
    update: readOnly,
    remove: readOnly,
    async list () {
      return [...current.users].map(([u, a]) => record(u, a))
    },
    async ping () {},
    async close () {},
    reload () {
      const run = reloading.then(async () => {
        const pw = await readAsync(path, 'password file')
        const totp = totpFile === undefined ? undefined : await readAsync(totpFile, 'totp file')
        current = parse(pw, totp)
      })
      reloading = run.catch(() => {})
      return run
    }
  }
}
