// Lockout counters in Redis, so failures on every node count toward one threshold and a lockout
// earned on one node holds on all. Per key (scope and the local tables' key):
//   <keyPrefix>lockout:<scope>:<key>:f  sorted set of failure times within the window (<= threshold)
//   <keyPrefix>lockout:<scope>:<key>:l  set while locked out (its TTL is the lockout)
//   <keyPrefix>lockout:<scope>:<key>:s  lockouts in a row, kept maxDuration past the last one
// Every key expires by itself; keys are made only from what the local tables accept (a
// well-formed account name, an address), one per failing key within the window.
import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import type { LockoutConfig } from '../config/hardening.js'
import type { LockoutScope, SharedLockout, Started } from '../auth/lockout-keys.js'

// KEYS: f, l, s; ARGV: window ms, threshold, member, duration ms, max duration ms. The sliding
// window of the local tables, on Redis' clock. Returns {failures, ms}; ms 0: no lockout began.
const FAIL = `
if redis.call('PTTL', KEYS[2]) > 0 then return {0, 0} end
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
redis.call('ZADD', KEYS[1], now, ARGV[3])
local n = redis.call('ZCARD', KEYS[1])
if n < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {n, 0}
end
redis.call('DEL', KEYS[1])
local strikes = math.min(redis.call('INCR', KEYS[3]), 32)
local ms = math.min(tonumber(ARGV[4]) * 2 ^ (strikes - 1), tonumber(ARGV[5]))
redis.call('SET', KEYS[2], '1', 'PX', ms)
redis.call('PEXPIRE', KEYS[3], ms + tonumber(ARGV[5]))
return {n, ms}`
// KEYS: the l keys; the milliseconds each has left (0: not locked).
const REMAINING = `
local r = {}
for i, k in ipairs(KEYS) do local ms = redis.call('PTTL', k) if ms < 0 then ms = 0 end r[i] = ms end
return r`
// KEYS: f, l, s. The owner logged in: its earlier failures were typos, unless it is locked.
const CLEAR = `
if redis.call('PTTL', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[3])
return 1`

interface LockoutCommands {
  bastionFail (f: string, l: string, s: string, windowMs: number, threshold: number, member: string, durationMs: number, maxMs: number): Promise<[number, number]>
  bastionRemaining (count: number, ...keys: string[]): Promise<number[]>
  bastionClear (f: string, l: string, s: string): Promise<number>
}

export interface RedisLockoutOptions {
  conn: Redis
  keyPrefix: string
  config: Pick<LockoutConfig, 'window' | 'duration' | 'maxDuration'>
  fault: (err: unknown) => Error
  /** Tells the other nodes of a lockout started here (scope, key, ms); never throws. */
  announce: (scope: LockoutScope, key: string, ms: number) => void
}

export interface RedisLockout extends SharedLockout {
  /** A lockout announced by another node: passed to the listener onRemote() registered. */
  received (scope: LockoutScope, key: string, ms: number): void
}

export function createRedisLockout (opts: RedisLockoutOptions): RedisLockout {
  const { conn, config } = opts
  conn.defineCommand('bastionFail', { numberOfKeys: 3, lua: FAIL })
  conn.defineCommand('bastionRemaining', { lua: REMAINING })
  conn.defineCommand('bastionClear', { numberOfKeys: 3, lua: CLEAR })
  const r = conn as unknown as LockoutCommands
  // The local keys join account and address with NUL; a space reads better in redis-cli and
  // cannot occur in either part.
  const base = (scope: LockoutScope, key: string): string => `${opts.keyPrefix}lockout:${scope}:${key.replace('\u0000', ' ')}`
  const keys = (scope: LockoutScope, key: string): [string, string, string] => {
    const b = base(scope, key)
    return [`${b}:f`, `${b}:l`, `${b}:s`]
  }
  let listener: ((scope: LockoutScope, key: string, ms: number) => void) | undefined

  return {
    async remaining (list) {
      if (list.length === 0) return []
      try {
        return await r.bastionRemaining(list.length, ...list.map(([scope, key]) => `${base(scope, key)}:l`))
      } catch (err) {
        throw opts.fault(err)
      }
    },
    async fail (scope, key, threshold): Promise<Started | undefined> {
      let answer: [number, number]
      try {
        // Two failures in one millisecond are two failures: each gets its own member.
        answer = await r.bastionFail(...keys(scope, key), config.window * 1000, threshold, randomBytes(6).toString('base64'), config.duration * 1000, config.maxDuration * 1000)
      } catch (err) {
        throw opts.fault(err)
      }
      const [failures, ms] = answer
      if (ms <= 0) return undefined
      opts.announce(scope, key, ms)
      return { failures, ms }
    },
    clear (scope, key) {
      r.bastionClear(...keys(scope, key)).catch(() => {})
    },
    onRemote (l) {
      listener = l
    },
    received (scope, key, ms) {
      listener?.(scope, key, ms)
    }
  }
}
