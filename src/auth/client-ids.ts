import { MAX_IDS_PER_USER } from '../stores/sqlite-client-ids.js'
import type { ClientIdOwner, ClientIdOwners } from '../stores/store.js'

// Bindings one broker keeps in memory at most; past it the least recently seen go first.
const MAX_BINDINGS = 1_000_000

/**
 * Client id owners for stores that cannot keep them (MySQL, the JSON file, password files, an
 * HTTP backend): in this process's memory, so a restart forgets them and the first login after
 * it binds an id again. Same rules as the SQLite store's: the first user binds an id, each user
 * keeps its most recently seen MAX_IDS_PER_USER.
 */
export function createMemoryClientIds (now = Date.now): ClientIdOwners {
  // Insertion order is recency: a bind moves the id to the end.
  const owners = new Map<string, { user: string; lastSeen: number }>()
  const byUser = new Map<string, Set<string>>()

  function drop (clientId: string): boolean {
    const o = owners.get(clientId)
    if (o === undefined) return false
    owners.delete(clientId)
    const ids = byUser.get(o.user.toLowerCase())
    ids?.delete(clientId)
    if (ids?.size === 0) byUser.delete(o.user.toLowerCase())
    return true
  }

  return {
    async bind (clientId, user) {
      const o = owners.get(clientId)
      if (o !== undefined && o.user.toLowerCase() !== user.toLowerCase()) return o.user
      const key = user.toLowerCase()
      const ids = byUser.get(key) ?? new Set<string>()
      byUser.set(key, ids)
      owners.delete(clientId)
      ids.delete(clientId)
      owners.set(clientId, { user: o?.user ?? user, lastSeen: now() })
      ids.add(clientId)
      // A Set keeps insertion order too: its first id is the user's least recently seen.
      if (ids.size > MAX_IDS_PER_USER) drop(ids.values().next().value as string)
      if (owners.size > MAX_BINDINGS) drop(owners.keys().next().value as string)
      return o?.user ?? user
    },
    async release (clientId) {
      return drop(clientId)
    },
    async list (user) {
      const all: ClientIdOwner[] = []
      for (const [clientId, o] of owners) {
        if (user === undefined || o.user.toLowerCase() === user.toLowerCase()) all.push({ clientId, user: o.user, lastSeen: new Date(o.lastSeen).toISOString() })
      }
      return all.reverse()
    }
  }
}
