// Client id owners (auth.clientIdBinding: owner) in Redis: in a cluster every node, and the CLI,
// must see one table, whatever the user store. Same rules as the SQLite table: the first user
// to log in with an id owns it; each user keeps its MAX_IDS_PER_USER most recently seen, the
// older ones released in the same script, so one user's random ids cannot grow Redis.
//   <keyPrefix>clientid:owner:<id>        string: the owner's user name
//   <keyPrefix>clientid:ids:<user, lower>  sorted set: the user's ids, scored by last seen (ms)
import type { Redis } from 'ioredis'
import { MAX_IDS_PER_USER } from '../stores/sqlite-client-ids.js'
import type { ClientIdOwner, ClientIdOwners } from '../stores/store.js'

// KEYS: owner key, the user's set; ARGV: user, id, max, owner key prefix. User names compare
// without case, as the SQLite table does. Redis' own clock: nodes' clocks may disagree.
const BIND = `
local o = redis.call('GET', KEYS[1])
if o and string.lower(o) ~= string.lower(ARGV[1]) then return o end
if not o then redis.call('SET', KEYS[1], ARGV[1]) end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000), ARGV[2])
local extra = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if extra > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, extra - 1)) do redis.call('DEL', ARGV[4] .. id) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
end
return o or ARGV[1]`
// KEYS: owner key; ARGV: id, user set prefix.
const RELEASE = `
local o = redis.call('GET', KEYS[1])
if not o then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[2] .. string.lower(o), ARGV[1])
return 1`

interface OwnerCommands {
  bastionBind (owner: string, ids: string, user: string, clientId: string, max: number, ownerPrefix: string): Promise<string>
  bastionUnbind (owner: string, clientId: string, idsPrefix: string): Promise<number>
}

// Keys read per SCAN step and per MGET when listing every binding (an admin command).
const PAGE = 500

export function createRedisClientIds (conn: Redis, keyPrefix: string, fault: (err: unknown) => Error): ClientIdOwners {
  conn.defineCommand('bastionBind', { numberOfKeys: 2, lua: BIND })
  conn.defineCommand('bastionUnbind', { numberOfKeys: 1, lua: RELEASE })
  const r = conn as unknown as OwnerCommands
  const ownerPrefix = `${keyPrefix}clientid:owner:`
  const idsPrefix = `${keyPrefix}clientid:ids:`

  /** One user's bindings, most recently seen first. */
  async function ofUser (user: string): Promise<ClientIdOwner[]> {
    const flat = await conn.zrevrange(`${idsPrefix}${user.toLowerCase()}`, 0, -1, 'WITHSCORES')
    const ids: Array<[string, number]> = []
    for (let i = 0; i + 1 < flat.length; i += 2) ids.push([flat[i] as string, Number(flat[i + 1])])
    if (ids.length === 0) return []
    const owners = await conn.mget(ids.map(([id]) => `${ownerPrefix}${id}`))
    return ids.flatMap(([clientId, at], i) => {
      const owner = owners[i]
      return owner === null || owner === undefined ? [] : [{ clientId, user: owner, lastSeen: new Date(at).toISOString() }]
    })
  }

  async function guarded<T> (step: () => Promise<T>): Promise<T> {
    try {
      return await step()
    } catch (err) {
      throw fault(err)
    }
  }

  return {
    async bind (clientId, user) {
      return await guarded(async () => await r.bastionBind(`${ownerPrefix}${clientId}`, `${idsPrefix}${user.toLowerCase()}`, user, clientId, MAX_IDS_PER_USER, ownerPrefix))
    },
    async release (clientId) {
      return await guarded(async () => (await r.bastionUnbind(`${ownerPrefix}${clientId}`, clientId, idsPrefix)) === 1)
    },
    async list (user) {
      return await guarded(async () => {
        if (user !== undefined) return await ofUser(user)
        const all: ClientIdOwner[] = []
        let cursor = '0'
        do {
          const [next, keys] = await conn.scan(cursor, 'MATCH', `${idsPrefix}*`, 'COUNT', PAGE)
          cursor = next
          for (const k of keys) all.push(...await ofUser(k.slice(idsPrefix.length)))
        } while (cursor !== '0')
        return all.sort((a, b) => b.lastSeen.localeCompare(a.lastSeen))
      })
    }
  }
}
