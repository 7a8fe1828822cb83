import type { Action, Decision, Identity } from '../types.js'
import type { AclPolicy } from './policy.js'

/** Topics remembered per connection; a device uses a handful, so this is a bound, not a size. */
export const CACHED_TOPICS_PER_CLIENT = 64

interface Remembered { generation: number; publish: Map<string, Decision>; read: Map<string, Decision> }

/**
 * Remembers a policy's synchronous answers per connection, for the two checks made per message:
 * `publish` (each PUBLISH) and `read` (each delivery). A device publishes to the same three
 * topics all its life, and a subscriber reads the same few, so walking the rules again for each
 * message is pure cost.
 *
 * Correct because an answer depends only on the identity (user, client id, certificate: fixed for
 * the connection) and the topic, until the rules change: `reload()` starts a new generation, so
 * no answer from the old rules is used after it returns. A revoked user is disconnected (and its
 * publishes refused before the policy is asked), so revocation needs nothing here. Answers that
 * arrive as Promises (a remote backend) are never remembered: that backend decides every time.
 *
 * Bounded: at most CACHED_TOPICS_PER_CLIENT topics per action and connection; past that, a
 * client that keeps inventing topics is simply asked about each (no eviction churn), and the
 * memory goes with the connection (WeakMap on its identity).
 */
export function cacheDecisions (policy: AclPolicy): AclPolicy {
  let generation = 0
  const remembered = new WeakMap<Identity, Remembered>()

  function decide (identity: Identity, action: Action, topic: string): Decision | Promise<Decision> {
    if (action === 'subscribe') return policy.decide(identity, action, topic)
    let entry = remembered.get(identity)
    if (entry === undefined || entry.generation !== generation) {
      entry = { generation, publish: new Map(), read: new Map() }
      remembered.set(identity, entry)
    }
    const known = entry[action]
    const hit = known.get(topic)
    if (hit !== undefined) return hit
    const answer = policy.decide(identity, action, topic)
    if (!(answer instanceof Promise) && known.size < CACHED_TOPICS_PER_CLIENT) known.set(topic, answer)
    return answer
  }

  return {
    name: policy.name,
    decide,
    ...(policy.reload === undefined
      ? {}
      : {
          async reload () {
            // The old answers go even when the reload fails part way: asking again is always safe.
            try { await policy.reload?.() } finally { generation++ }
          }
        }),
    ...(policy.close === undefined ? {} : { close: async () => { await policy.close?.() } })
  }
}
