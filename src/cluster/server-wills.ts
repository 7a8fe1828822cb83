// Server wills a crashed node still owes (docs/cluster.md, "Wills of a crashed node"). A node
// publishes the server will of a device that drops from it; if the node itself dies, nobody saw
// the drop. So while such a device is connected, its node keeps an entry in Redis, and a survivor
// that sweeps the dead node's wills publishes the server will for each entry left.
//
// `<keyPrefix>swill:<brokerId>`: a hash, client id -> `{"user","topic","conn"}`, written when
//   the device is registered, deleted when its connection ends on this node (whatever the
//   reason: the node publishes the server will itself when one is due).
// `<keyPrefix>swill:brokers`: the broker ids that may have such a hash, so a sweep finds the
//   entries of a node that died before the sweeping node ever heard of it.
//
// `conn` tells one connection's entry from the next one's: a device taken over on this node has
// its new entry written under the same field, and the old connection's end must not delete it.
import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'

const BROKERS = 'swill:brokers'
const table = (brokerId: string): string => `swill:${brokerId}`

// KEYS: the table, the client id's hold; ARGV: the client id. Whoever deletes the entry
// publishes it; the hold says who holds the id now.
const CLAIM = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
return {v, redis.call('GET', KEYS[2]) or ''}`

// KEYS: the table; ARGV: the client id, the entry this connection wrote.
const FORGET = `
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('HDEL', KEYS[1], ARGV[1]) end
return 0`

interface Commands {
  bastionClaimServerWill (table: string, hold: string, clientId: string): Promise<[string, string] | null>
  bastionForgetServerWill (table: string, clientId: string, entry: string): Promise<number>
}

/** One entry of a dead node's table, claimed by this node (deleted: nobody else publishes it). */
export interface ClaimedServerWill {
  readonly clientId: string
  /** undefined when the entry cannot be read: nobody is re-checked, nothing is published. */
  readonly user?: string
  readonly topic?: string
  /** `<brokerId> <user>` of whoever holds the client id now, or ''. */
  readonly hold: string
}

export interface ServerWillTable {
  /** A device without a will of its own is connected here as `user`. */
  arm (clientId: string, user: string, topic: string): { forget (): void }
  /** Broker ids that have (or had) a table. */
  brokers (): Promise<string[]>
  /** The client ids in a broker's table. */
  clientIds (brokerId: string): Promise<string[]>
  /** An entry as it stands, without claiming it; undefined once claimed or never there. */
  peek (brokerId: string, clientId: string): Promise<Omit<ClaimedServerWill, 'hold'> | undefined>
  claim (brokerId: string, clientId: string): Promise<ClaimedServerWill | undefined>
  /** Drops a broker id whose table is empty. */
  retireIfEmpty (brokerId: string): Promise<void>
  /** This node stops cleanly: its devices were disconnected, no server will is owed. */
  retire (): Promise<void>
}

/** An entry that is not ours (another version, a hand edit) names nobody: nothing is published. */
function parse (clientId: string, raw: string): Omit<ClaimedServerWill, 'hold'> {
  let parsed: { user?: unknown; topic?: unknown } = {}
  try { parsed = JSON.parse(raw) } catch {}
  return {
    clientId,
    ...(typeof parsed.user === 'string' ? { user: parsed.user } : {}),
    ...(typeof parsed.topic === 'string' ? { topic: parsed.topic } : {})
  }
}

export function createServerWillTable (db: Redis, brokerId: string, onError: (err: Error) => void): ServerWillTable {
  db.defineCommand('bastionClaimServerWill', { numberOfKeys: 2, lua: CLAIM })
  db.defineCommand('bastionForgetServerWill', { numberOfKeys: 1, lua: FORGET })
  const commands = db as unknown as Commands
  const own = table(brokerId)
  let listed: Promise<unknown> | undefined

  return {
    arm (clientId, user, topic) {
      listed ??= db.sadd(BROKERS, brokerId).catch((err: Error) => { listed = undefined; onError(err) })
      const entry = JSON.stringify({ user, topic, conn: randomBytes(6).toString('base64url') })
      db.hset(own, clientId, entry).catch(onError)
      return {
        forget () { commands.bastionForgetServerWill(own, clientId, entry).catch(onError) }
      }
    },
    async brokers () { return await db.smembers(BROKERS) },
    async clientIds (id) { return await db.hkeys(table(id)) },
    async peek (id, clientId) {
      const raw = await db.hget(table(id), clientId)
      return raw === null ? undefined : parse(clientId, raw)
    },
    async claim (id, clientId) {
      const got = await commands.bastionClaimServerWill(table(id), `clientid:held:${clientId}`, clientId)
      if (got === null) return undefined
      return { ...parse(clientId, got[0]), hold: got[1] }
    },
    async retireIfEmpty (id) {
      if (await db.hlen(table(id)) === 0) await db.srem(BROKERS, id)
    },
    async retire () {
      await db.del(own)
      await db.srem(BROKERS, brokerId)
    }
  }
}
