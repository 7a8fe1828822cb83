import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { UserRecord } from '../stores/store.js'

export interface CredentialCacheOptions {
  /** Seconds a verified password is remembered; 0 turns the cache off. */
  readonly ttl: number
  /** Accounts remembered at once; the least recently used is forgotten first. */
  readonly maxEntries: number
  readonly now?: () => number
}

export interface CredentialCache {
  /** True when `password` was verified for this record (same hash, secret, enabled) within the TTL. */
  hit (record: UserRecord, password: Buffer): boolean
  /** Remembers a password bcrypt just accepted for this record. */
  remember (record: UserRecord, password: Buffer): void
  /** Forgets an account (revocation). */
  forget (user: string): void
  readonly size: number
}

interface Entry { digest: Buffer; until: number }

/**
 * Remembers, for a while, that a password was verified, so a device that logs in every minute
 * costs one bcrypt per TTL instead of one per login. What is kept is an HMAC, under a key that
 * lives only in this process, of the account, the password and the stored hash, secret and
 * enabled flag: never the password, and a change to any of those three is a miss by
 * construction. The trade-off: someone who can read this process's memory (key and digests)
 * can test password guesses at HMAC speed instead of bcrypt speed, for the accounts cached.
 */
export function createCredentialCache (opts: CredentialCacheOptions): CredentialCache {
  const key = randomBytes(32)
  const now = opts.now ?? Date.now
  // Keyed by account as lower case: the lockout and MySQL both ignore case.
  const entries = new Map<string, Entry>()

  function digest (record: UserRecord, password: Buffer): Buffer {
    const h = createHmac('sha256', key)
    // Length-prefixed fields: no two different tuples can make the same input.
    for (const part of [Buffer.from(record.username), password, Buffer.from(record.passwordHash), Buffer.from(record.totpSecret ?? ''), Buffer.from(record.enabled ? '1' : '0')]) {
      const len = Buffer.alloc(4)
      len.writeUInt32BE(part.length)
      h.update(len).update(part)
    }
    return h.digest()
  }

  return {
    hit (record, password) {
      if (opts.ttl === 0) return false
      const k = record.username.toLowerCase()
      const e = entries.get(k)
      if (e === undefined) return false
      if (e.until <= now()) {
        entries.delete(k)
        return false
      }
      if (!timingSafeEqual(e.digest, digest(record, password))) return false
      // Most recently used last: the Map's first entry is the one to evict.
      entries.delete(k)
      entries.set(k, e)
      return true
    },
    remember (record, password) {
      if (opts.ttl === 0 || opts.maxEntries === 0) return
      const k = record.username.toLowerCase()
      entries.delete(k)
      entries.set(k, { digest: digest(record, password), until: now() + opts.ttl * 1000 })
      if (entries.size > opts.maxEntries) entries.delete(entries.keys().next().value as string)
    },
    forget (user) {
      entries.delete(user.toLowerCase())
    },
    get size () { return entries.size }
  }
}
