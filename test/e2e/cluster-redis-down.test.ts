// Redis going away under a running cluster: no login is accepted on what a node last knew
// (0x88 / 3.1.1 code 3, logged once a minute); clients already connected are told to come back
// later (DISCONNECT 0x89) once Redis has been gone for connectTimeout, and what they publish
// meanwhile is not acknowledged (they keep it); logins and cross-node delivery work again once
// Redis is back.
import t from 'tap'
import { join } from 'node:path'
import { events, nextMessage, PASSWORD, startHarness, type Harness } from '../helpers/harness.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { scratch } from '../helpers/scratch.js'

const redis = await startRedisServer()
t.teardown(() => redis.close())
const users = join(scratch('bastion-cluster-down-')(), 'users.db')

async function node (nodeId: string): Promise<Harness> {
  const h = await startHarness({
    auth: { store: { type: 'sqlite', path: users }, workers: 1, totp: { replayProtection: false } },
    cluster: { nodeId, redis: { host: '127.0.0.1', port: redis.port, keyPrefix: 'down-test:', connectTimeout: 1000 } }
  })
  t.teardown(() => h.close())
  return h
}
const a = await node('a')
const b = await node('b')
b.knowSecret('alice', await a.addUser('alice'))
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** How a connection ended within `ms`: the DISCONNECT reason code, `closed` without one, or `alive`. */
function ending (c: Awaited<ReturnType<Harness['connect']>>, ms: number): Promise<number | 'closed' | 'alive'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('alive'), ms)
    c.once('disconnect', (p) => { clearTimeout(timer); resolve(p.reasonCode ?? 0) })
    c.once('close', () => { clearTimeout(timer); setImmediate(() => resolve('closed')) })
  })
}

t.test('while Redis is down: logins get 0x88 / 3 (logged once), connected clients are told 0x89; after it returns, both work again', async (t) => {
  const watcher = await b.connect('alice', { clientId: 'alice-watcher' })
  const device = await a.connect('alice', { clientId: 'alice-sensor' })
  const old = await a.connect('alice', { clientId: 'alice-v311', protocolVersion: 4 })
  const ends = [ending(watcher, 8000), ending(device, 8000), ending(old, 8000)]
  const stoppedAt = Date.now()
  await redis.stop()
  // A QoS 1 PUBLISH cannot be routed without Redis: it is not acknowledged, so the device keeps
  // it and sends it again after reconnecting (patches/aedes/0019; before, PUBACK came within ms).
  let answered: string | undefined
  device.publish('metrics/alice/Estado', 'during', { qos: 1 }, (err) => { answered = err === undefined || err === null ? 'PUBACK' : err.message })
  const login = (h: Harness, v: 4 | 5, clientId: string): Parameters<Harness['refused']>[0] => ({ username: `alice|${h.code('alice')}`, password: PASSWORD, clientId, protocolVersion: v })
  // Each clientIdBinding path and the lockout check ask Redis: none may fall back to this node's memory.
  t.equal(await b.refused(login(b, 5, 'alice-new')), 0x88, 'MQTT 5: Server unavailable')
  t.equal(await b.refused(login(b, 4, 'alice-new')), 3, '3.1.1: server unavailable')
  t.equal(await b.refused({ username: `alice|${b.code('alice')}`, password: 'a wrong one', clientId: 'x' }), 0x88, 'a wrong password learns nothing either')
  t.same(events(b, 'login.failed').slice(-3).map((e) => e.reason), ['backend_unavailable', 'backend_unavailable', 'backend_unavailable'])
  t.equal(events(b, 'cluster.unavailable').length, 1, 'one cluster.unavailable line for the minute')
  t.notMatch(JSON.stringify(events(b, 'cluster.unavailable')), PASSWORD)
  t.same(await Promise.all(ends), [0x89, 0x89, 'closed'], 'told: DISCONNECT 0x89 Server busy (3.1.1: closed)')
  t.ok(Date.now() - stoppedAt >= 900, 'not before connectTimeout: a short failover drops nobody')
  t.not(answered, 'PUBACK', 'the PUBLISH made while Redis was down was never acknowledged')
  t.match(events(a, 'cluster.clients_disconnected'), [{ clients: 2 }])
  t.same([...events(a, 'will.published'), ...events(b, 'will.published')], [], 'no will: it could not be routed')

  await redis.start()
  let back: Awaited<ReturnType<Harness['connect']>> | undefined
  for (let i = 0; i < 30 && back === undefined; i++) {
    back = await b.connect('alice', { clientId: 'alice-watcher' }).catch(() => undefined)
    if (back === undefined) await sleep(500)
  }
  t.ok(back?.connected, 'a login is accepted again once Redis answers')
  await back?.subscribeAsync('metrics/alice/#', { qos: 1 })
  const again = await a.connect('alice', { clientId: 'alice-sensor' })
  const got = nextMessage(back as NonNullable<typeof back>, 5000)
  await again.publishAsync('metrics/alice/Estado', 'back', { qos: 1 })
  t.equal((await got)?.payload, 'back', 'delivery across nodes works again')
  await again.endAsync()
  await back?.endAsync()
})
