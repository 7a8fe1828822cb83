// The health verdict on its own: listeners first, then a remote backend's last-seen outage,
// then the user store's ping, bounded in time and shared between concurrent requests.
import t from 'tap'
import { createHealthCheck } from '../../src/monitoring/health.js'
import type { UserStore } from '../../src/stores/store.js'

function storeWithPing (ping: () => Promise<void>): UserStore {
  return { ping } as unknown as UserStore
}

t.test('healthy when the listeners accept and the store answers its ping', async (t) => {
  const check = createHealthCheck({ listeners: () => undefined, store: storeWithPing(async () => {}) })
  t.equal(await check(), undefined)
})

t.test('a store that does not answer in time is unhealthy, with the time in the reason', async (t) => {
  const check = createHealthCheck({ listeners: () => undefined, store: storeWithPing(async () => await new Promise(() => {})), timeoutMs: 50 })
  const started = Date.now()
  t.equal(await check(), 'user store unavailable: no answer within 50 ms')
  t.ok(Date.now() - started < 1000, 'bounded by the timeout')
})

t.test('a store error becomes one line, and concurrent checks share one ping', async (t) => {
  let pings = 0
  const check = createHealthCheck({
    listeners: () => undefined,
    store: storeWithPing(async () => { pings++; await new Promise((resolve) => setTimeout(resolve, 20)); throw new Error('mysql 127.0.0.1:3306/db:\nECONNREFUSED') })
  })
  t.same(await Promise.all([check(), check(), check()]), Array(3).fill('user store unavailable: mysql 127.0.0.1:3306/db: ECONNREFUSED'))
  t.equal(pings, 1)
})

t.test('listeners that are not accepting, or a backend in an outage, are unhealthy without asking the store', async (t) => {
  let pings = 0
  const store = storeWithPing(async () => { pings++ })
  t.equal(await createHealthCheck({ listeners: () => 'broker is stopping', store })(), 'broker is stopping')
  t.equal(await createHealthCheck({ listeners: () => undefined, backendOutage: () => 'ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:5000' })(), 'auth backend unavailable: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:5000')
  t.equal(await createHealthCheck({ listeners: () => undefined, backendOutage: () => undefined })(), undefined, 'a backend last seen answering is healthy')
  t.equal(pings, 0)
})
