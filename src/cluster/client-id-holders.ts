// Which node's connection holds each client id, in Redis, so the rule of one node (only the
// user holding an id may take it over) holds across nodes. One key per held id:
// `<keyPrefix>clientid:held:<id>` = `<brokerId> <user>`, with a TTL this node refreshes while the
// connection lives. A node that crashes stops refreshing, and its ids are free again within
// HOLD_TTL_MS: no per-node bookkeeping to clean, and nothing a dead node can hold forever.
import type { Redis } from 'ioredis'
import type { SharedHolders } from '../auth/sessions.js'
import type { Logger } from '../log.js'

/** How long an id stays held after its node last said so: the bound on a crashed node's ids. */
export const HOLD_TTL_MS = 90_000
// Three refreshes per TTL: one lost to a short Redis hiccup does not free a live device's id.
const REFRESH_MS = HOLD_TTL_MS / 3
// A kept session's hold expires with it; 0xFFFFFFFF ("never") is held for a year at a time.
const MAX_KEEP_MS = 365 * 86_400_000

// KEYS[1] the id's key; ARGV: brokerId, user, ttl ms. Free or the same user's (from any node):
// now this node's; otherwise the holder's user name, and nothing changes.
const HOLD = `
local v = redis.call('GET', KEYS[1])
if v then
  local u = string.sub(v, string.find(v, ' ', 1, true) + 1)
  if u ~= ARGV[2] then return u end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return false`
// KEYS[1]; ARGV: value, keep ms (0: free). Only while it is still this node's hold for that user.
const RELEASE = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('DEL', KEYS[1]) end
return 1`
// KEYS[1]; ARGV: value, ttl ms. A hold lost with Redis' data (a restart) is written again.
const REFRESH = `
local v = redis.call('GET', KEYS[1])
if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
return 0`

interface HolderCommands {
  bastionHold (key: string, brokerId: string, user: string, ttl: number): Promise<string | null>
  bastionRelease (key: string, value: string, keepMs: number): Promise<number>
  bastionRefresh (key: string, value: string, ttl: number): Promise<number>
}

export interface HolderOptions {
  /** A fail-fast connection without key prefix (cluster/redis.ts). */
  conn: Redis
  keyPrefix: string
  brokerId: string
  log: Logger
  /** Turns a Redis failure into the fault a login answers 0x88 to (and logs it, gated). */
  fault: (err: unknown) => Error
}

export function createRedisHolders (opts: HolderOptions): SharedHolders {
  const { conn, brokerId } = opts
  conn.defineCommand('bastionHold', { numberOfKeys: 1, lua: HOLD })
  conn.defineCommand('bastionRelease', { numberOfKeys: 1, lua: RELEASE })
  conn.defineCommand('bastionRefresh', { numberOfKeys: 1, lua: REFRESH })
  const r = conn as unknown as HolderCommands
  const key = (clientId: string): string => `${opts.keyPrefix}clientid:held:${clientId}`
  const value = (user: string): string => `${brokerId} ${user}`
  return {
    refreshMs: REFRESH_MS,
    async hold (clientId, user) {
      try {
        return (await r.bastionHold(key(clientId), brokerId, user, HOLD_TTL_MS)) ?? undefined
      } catch (err) {
        throw opts.fault(err)
      }
    },
    release (clientId, user, keepSeconds) {
      // Unreachable Redis: the hold expires by itself within HOLD_TTL_MS.
      r.bastionRelease(key(clientId), value(user), Math.min(keepSeconds * 1000, MAX_KEEP_MS)).catch(() => {})
    },
    refresh (held) {
      if (held.length === 0) return
      const batch = conn.pipeline()
      for (const [clientId, user] of held) (batch as unknown as HolderCommands).bastionRefresh(key(clientId), value(user), HOLD_TTL_MS)
      batch.exec().catch((err: Error) => opts.log.debug({ event: 'cluster.refresh_failed', reason: err.message }, 'client id holds not refreshed'))
    }
  }
}
