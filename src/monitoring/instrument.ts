import type { GoAuthClient } from '../auth/http-backend.js'
import type { UserStore } from '../stores/store.js'
import type { BrokerMetrics } from './metrics.js'

/**
 * The store as logins see it, with each find() timed. Wrapped here rather than inside every
 * store so stores stay unaware of metrics; everything else passes through untouched.
 */
export function timedStore (store: UserStore, name: string, metrics: BrokerMetrics): UserStore {
  const find: UserStore['find'] = async (username) => await metrics.timeLookup(name, async () => await store.find(username))
  return new Proxy(store, {
    get (target, prop, receiver) {
      return prop === 'find' ? find : Reflect.get(target, prop, receiver)
    }
  })
}

/**
 * The HTTP backend client with user checks timed, and its outage as the last call saw it: the
 * go-auth contract has no health request, so /healthz reports what logins and ACL checks met.
 */
export function watchedBackend (client: GoAuthClient, metrics: BrokerMetrics): { client: GoAuthClient; outage: () => string | undefined } {
  let outage: string | undefined
  async function observe<T> (call: Promise<T>): Promise<T> {
    try {
      const answer = await call
      outage = undefined
      return answer
    } catch (err) {
      outage = (err as Error).message
      throw err
    }
  }
  return {
    client: {
      checkUser: async (username, password, clientId) => await metrics.timeLookup('http', async () => await observe(client.checkUser(username, password, clientId))),
      checkAcl: async (username, clientId, topic, acc) => await observe(client.checkAcl(username, clientId, topic, acc)),
      close: async () => { await client.close() }
    },
    outage: () => outage
  }
}
