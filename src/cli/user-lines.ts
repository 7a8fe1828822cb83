import { isValidSecret } from '../crypto/totp.js'
import { BastionError } from '../errors.js'
import type { UserRecord } from '../stores/store.js'
import { USERNAME_PATTERN } from '../types.js'
import { passwordProblem } from './password-rules.js'

/**
 * One line of `user import` / `user export`: a JSON object with a stored record's own field
 * names. lastStep is left out on purpose: a replay-protection step belongs to the store it was
 * claimed in, and carrying it over could lock a user out of codes they never used.
 */
export interface ImportedUser {
  readonly line: number
  readonly username: string
  /** Exactly one of passwordHash and password is set. */
  readonly passwordHash?: string
  readonly password?: string
  readonly totpSecret: string
  readonly enabled: boolean
  readonly createdAt: string
}

const KEYS = new Set(['username', 'passwordHash', 'password', 'totpSecret', 'enabled', 'createdAt'])
// Modular crypt format: $2a$/$2b$/$2y$, a two-digit cost, 22 characters of salt and 31 of hash.
const BCRYPT_HASH = /^\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}$/
// A date, or a date and time with its offset: without one, the time would be read as local time.
const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2}))?$/

/** A name from the input, short and escaped, fit for a one-line error message. */
function quote (s: string): string {
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}...` : s)
}

/**
 * The user on line `line`, validated; `now` is the createdAt of a line without one.
 * Throws BASTION_ERR_INVALID_INPUT naming the line and the field; never quotes a password,
 * hash or secret.
 */
export function parseUserLine (text: string, line: number, now: string): ImportedUser {
  const fail = (what: string): never => { throw new BastionError('BASTION_ERR_INVALID_INPUT', `line ${line}: ${what}`) }
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch {
    // The parser's own message quotes the text around the fault, which may be a password.
    return fail('not JSON')
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return fail('not a JSON object')
  // JSON.parse makes "__proto__" an own key like any other, so it is refused here as unknown.
  for (const key of Object.keys(doc)) {
    if (!KEYS.has(key)) return fail(`unknown key ${quote(key)} (allowed: ${[...KEYS].join(', ')})`)
  }
  const fields = doc as Record<string, unknown>
  const get = (key: string): unknown => Object.hasOwn(fields, key) ? fields[key] : undefined

  const username = get('username')
  if (username === undefined) return fail('username is missing')
  if (typeof username !== 'string') return fail('username must be a string')
  if (!USERNAME_PATTERN.test(username)) return fail(`invalid user name ${quote(username)}: use 1-64 letters, digits, _ . -`)

  const hash = get('passwordHash')
  const password = get('password')
  if (hash === undefined && password === undefined) return fail('needs password or passwordHash')
  if (hash !== undefined && password !== undefined) return fail('has both password and passwordHash: give one')
  let credential: { passwordHash: string } | { password: string }
  if (hash !== undefined) {
    if (typeof hash !== 'string' || !BCRYPT_HASH.test(hash)) return fail('passwordHash is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31, 60 characters)')
    credential = { passwordHash: hash }
  } else {
    if (typeof password !== 'string') return fail('password must be a string')
    const problem = passwordProblem(password)
    if (problem !== undefined) return fail(problem)
    credential = { password }
  }

  const rawSecret = get('totpSecret')
  if (rawSecret === undefined) return fail('totpSecret is missing (every user of this store logs in with a TOTP code)')
  const totpSecret = typeof rawSecret === 'string' ? rawSecret.replace(/\s+/g, '').toUpperCase() : ''
  if (!isValidSecret(totpSecret)) return fail('totpSecret must be base32 (A-Z, 2-7) of at least 26 characters (128 bits)')

  const enabled = Object.hasOwn(fields, 'enabled') ? fields.enabled : true
  if (typeof enabled !== 'boolean') return fail('enabled must be true or false')

  const created = get('createdAt')
  const createdAt = created === undefined ? now : typeof created === 'string' ? isoTimestamp(created) : undefined
  if (createdAt === undefined) return fail('createdAt must be an ISO 8601 date, e.g. 2026-12-01T16:27:25.000Z')

  return { line, username, ...credential, totpSecret, enabled, createdAt }
}

/** `s` as Date#toISOString writes it, or undefined if it is not a real ISO 8601 date. */
function isoTimestamp (s: string): string | undefined {
  const m = ISO_DATE.exec(s)
  if (m === null) return undefined
  const [, y, mo, d, h = '0', mi = '0', sec = '0'] = m
  const date = new Date(s.replace(' ', 'T'))
  if (Number.isNaN(date.getTime())) return undefined
  // Date rolls 2026-02-30 over into March: compare the fields back, in UTC before the offset.
  const utc = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(sec)))
  if (utc.getUTCFullYear() !== Number(y) || utc.getUTCMonth() !== Number(mo) - 1 || utc.getUTCDate() !== Number(d) ||
    utc.getUTCHours() !== Number(h) || utc.getUTCMinutes() !== Number(mi) || utc.getUTCSeconds() !== Number(sec)) return undefined
  return date.toISOString()
}

/** One `user export` line: the fields `user import` takes, in a fixed order. */
export function exportLine (u: UserRecord): string {
  return JSON.stringify({
    username: u.username,
    passwordHash: u.passwordHash,
    ...(u.totpSecret === undefined ? {} : { totpSecret: u.totpSecret }),
    enabled: u.enabled,
    ...(u.createdAt === '' ? {} : { createdAt: u.createdAt })
  })
}
