import { createReadStream } from 'node:fs'
import { createPasswordPool, passwordPoolSize } from '../crypto/password-pool.js'
import { BastionError, isBastionError } from '../errors.js'
import type { UserRecord, UserStore } from '../stores/store.js'
import { boundedLines, type LineLimits } from './bounded-lines.js'
import { BCRYPT_COST } from './password-rules.js'
import { exportLine, parseUserLine, type ImportedUser } from './user-lines.js'

// A user's line is ~250 bytes; the bounds stop a wrong file (a disk image, an endless pipe)
// early instead of after minutes of reading.
const LIMITS: LineLimits = { maxLineBytes: 64 * 1024, maxLines: 1_000_000 }
// Lines per write: one write per user is slow for a large store, one for all holds it twice.
const EXPORT_CHUNK = 1000

/**
 * `user import FILE`: validates every line before anything else, so one bad line imports
 * nothing; then hashes the plain passwords in the worker pool and adds all users in one
 * all-or-nothing addMany.
 */
export async function importUsers (store: UserStore, file: string, out: (s: string) => void): Promise<void> {
  const users = await readUsers(file)
  // Checked before hashing: a clash found by addMany would come after minutes of bcrypt.
  const stored = new Map((await store.list()).map((u) => [fold(u.username), u.username]))
  for (const u of users) {
    const other = stored.get(fold(u.username))
    if (other === undefined) continue
    const as = other === u.username ? '' : ` (as ${other})`
    throw new BastionError('BASTION_ERR_USER_EXISTS', `line ${u.line}: user ${u.username} already exists in the store${as}: nothing was imported`)
  }
  const plain = users.filter((u) => u.password !== undefined)
  const hashes = await hashAll(plain.map((u) => u.password as string))
  const byLine = new Map(plain.map((u, i) => [u.line, hashes[i] as string]))
  const records: UserRecord[] = users.map((u) => ({
    username: u.username,
    passwordHash: u.passwordHash ?? (byLine.get(u.line) as string),
    totpSecret: u.totpSecret,
    enabled: u.enabled,
    createdAt: u.createdAt
  }))
  try {
    await store.addMany(records)
  } catch (err) {
    // The store adds all or none: say so, whatever went wrong.
    if (isBastionError(err)) throw new BastionError(err.code, `${err.message}: nothing was imported`, { cause: err })
    throw err
  }
  out(`imported ${count(records.length, 'user')} (${count(plain.length, 'password')} hashed)\n`)
}

/**
 * `user export`: every user as one JSON line, sorted by name as the SQLite store lists them
 * (ignoring case), so that exports of two stores holding the same users are the same bytes.
 */
export async function exportUsers (store: UserStore, out: (s: string) => void): Promise<void> {
  const users = (await store.list()).sort((a, b) => compare(fold(a.username), fold(b.username)) || compare(a.username, b.username))
  for (let i = 0; i < users.length; i += EXPORT_CHUNK) {
    out(users.slice(i, i + EXPORT_CHUNK).map((u) => exportLine(u) + '\n').join(''))
  }
}

/**
 * Names are compared ignoring case: the SQLite and MySQL stores cannot hold both `Alice` and
 * `alice`, and a file that imports into one store must import into the others too.
 * USERNAME_PATTERN is ASCII, so lower-casing is SQLite's NOCASE.
 */
const fold = (name: string): string => name.toLowerCase()
const compare = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0)
const count = (n: number, noun: string): string => `${n} ${noun}${n === 1 ? '' : 's'}`

async function readUsers (file: string): Promise<ImportedUser[]> {
  const now = new Date().toISOString()
  const input = file === '-' ? process.stdin : createReadStream(file)
  const name = file === '-' ? 'standard input' : file
  const users: ImportedUser[] = []
  // A Map, not an object: a user may be called __proto__ or constructor.
  const seen = new Map<string, { line: number; username: string }>()
  for await (const { number, text } of boundedLines(input, name, LIMITS)) {
    if (text.trim() === '') continue
    const user = parseUserLine(text, number, now)
    const first = seen.get(fold(user.username))
    if (first !== undefined) {
      const as = first.username === user.username ? '' : ` as ${first.username}`
      throw new BastionError('BASTION_ERR_INVALID_INPUT', `line ${number}: user ${user.username} appears twice (first on line ${first.line}${as})`)
    }
    seen.set(fold(user.username), { line: number, username: user.username })
    users.push(user)
  }
  return users
}

/** bcrypt hashes of `passwords`, in order; a few per worker so none sits idle between jobs. */
async function hashAll (passwords: readonly string[]): Promise<string[]> {
  if (passwords.length === 0) return []
  const size = passwordPoolSize(0)
  const pool = createPasswordPool(size)
  const hashes: string[] = []
  const progress = process.stderr.isTTY === true
  let next = 0
  let done = 0
  let failed = false
  async function lane (): Promise<void> {
    // Each pass takes the next password; a failure in another lane stops this one too.
    while (next < passwords.length && !failed) {
      const i = next++
      try {
        hashes[i] = await pool.hash(passwords[i] as string, BCRYPT_COST)
      } catch (err) {
        failed = true
        throw err
      }
      done++
      if (progress) process.stderr.write(`\rhashing passwords: ${done}/${passwords.length}`)
    }
  }
  try {
    await Promise.all(Array.from({ length: Math.min(size * 2, passwords.length) }, lane))
  } finally {
    if (progress) process.stderr.write('\n')
    await pool.close()
  }
  return hashes
}
