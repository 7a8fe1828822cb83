import { createHash, pbkdf2, randomBytes, timingSafeEqual } from 'node:crypto'
import { promisify } from 'node:util'

// The two hash formats of Mosquitto 2.0's `mosquitto_passwd` (checked against eclipse-mosquitto
// v2.0.11 src/password_mosq.c pw__hash and src/security_default.c unpwd__decode_passwords /
// pw__digest, and v2.1.2 libcommon/password_common.c, which still reads both):
//   $6$<b64 salt>$<b64 hash>               hash = SHA-512(password || salt)
//   $7$<iterations>$<b64 salt>$<b64 hash>  hash = PBKDF2-HMAC-SHA512(password, salt, iterations, 64)
// The salt is 12 bytes (2.0) or 64 bytes (2.1); the hash is always 64 bytes. Standard base64
// with padding, as OpenSSL's BIO_f_base64 writes it.

const pbkdf2Async = promisify(pbkdf2)

const B64 = '[A-Za-z0-9+/]+={0,2}'
const SHA512_RE = new RegExp(`^\\$6\\$(${B64})\\$(${B64})$`)
const PBKDF2_RE = new RegExp(`^\\$7\\$([1-9][0-9]{0,7})\\$(${B64})\\$(${B64})$`)
const HASH_BYTES = 64
// Mosquitto reads any positive count; past this a typo in the file would hold a libuv
// threadpool thread (shared with fs and dns) for seconds on every login.
const MAX_ITERATIONS = 10_000_000

interface Parsed {
  readonly iterations: number // 0 for $6$
  readonly salt: Buffer
  readonly hash: Buffer
}

function decode (b64: string): Buffer | undefined {
  const buf = Buffer.from(b64, 'base64')
  // Node's decoder skips what it cannot read; a round trip proves the text was clean base64.
  return buf.toString('base64') === b64 ? buf : undefined
}

function parse (hash: string): Parsed | undefined {
  let iterations = 0
  let saltText: string | undefined
  let hashText: string | undefined
  const m7 = PBKDF2_RE.exec(hash)
  if (m7 !== null) {
    iterations = Number(m7[1])
    if (iterations > MAX_ITERATIONS) return undefined
    saltText = m7[2]
    hashText = m7[3]
  } else {
    const m6 = SHA512_RE.exec(hash)
    if (m6 === null) return undefined
    saltText = m6[1]
    hashText = m6[2]
  }
  const salt = saltText === undefined ? undefined : decode(saltText)
  const digest = hashText === undefined ? undefined : decode(hashText)
  if (salt === undefined || digest === undefined) return undefined
  if ((salt.length !== 12 && salt.length !== HASH_BYTES) || digest.length !== HASH_BYTES) return undefined
  return { iterations, salt, hash: digest }
}

/** True for a well-formed Mosquitto `$6$` (SHA-512) or `$7$` (PBKDF2-SHA512) password hash. */
export function isMosquittoHash (hash: string): boolean {
  return parse(hash) !== undefined
}

/**
 * Checks a password against a hash written by Mosquitto 2.x `mosquitto_passwd`. PBKDF2 runs
 * on libuv's threadpool, not on the event loop. Resolves false for a wrong password and for a
 * malformed hash; never rejects.
 *
 * @example
 *   await verifyMosquittoHash('s3cret', line.slice(line.indexOf(':') + 1))
 */
export async function verifyMosquittoHash (password: string | Uint8Array, hash: string): Promise<boolean> {
  try {
    const p = parse(hash)
    if (p === undefined) return false
    const bytes = typeof password === 'string' ? Buffer.from(password, 'utf8') : Buffer.from(password)
    // Mosquitto hashes strlen(password): "secret\0anything" would pass there for "secret".
    // No mosquitto_passwd hash can contain a NUL, so such a password is simply wrong here.
    if (bytes.includes(0)) return false
    const actual = p.iterations === 0
      ? createHash('sha512').update(bytes).update(p.salt).digest()
      : await pbkdf2Async(bytes, p.salt, p.iterations, HASH_BYTES, 'sha512')
    return timingSafeEqual(actual, p.hash)
  } catch {
    return false
  }
}

/**
 * A `$7$101$` hash (Mosquitto's default kind and cost) of a random password that was thrown
 * away: checked for unknown users so that they cost the same as known ones.
 */
export const MOSQUITTO_DUMMY_HASH =
  '$7$101$RruY7U03/wiWXShr$6rHrEI+ZoA4gnGMS3F6SBPAeJPmAGb0x2296o4BLYGya+ClXWVFOt5WLK9tp+FLEek3h8/o4hNIqrMrPigOXuQ=='

/**
 * A hash of the same kind and cost as `like` that no password matches (its digest is random
 * bytes): for a file whose users were hashed with `-H sha512` or a non-default iteration count.
 * Falls back to MOSQUITTO_DUMMY_HASH when `like` is not a Mosquitto hash.
 */
export function mosquittoDummyHashLike (like: string): string {
  const p = parse(like)
  if (p === undefined) return MOSQUITTO_DUMMY_HASH
  const salt = randomBytes(p.salt.length).toString('base64')
  const hash = randomBytes(HASH_BYTES).toString('base64')
  return p.iterations === 0 ? `$6$${salt}$${hash}` : `$7$${p.iterations}$${salt}$${hash}`
}
