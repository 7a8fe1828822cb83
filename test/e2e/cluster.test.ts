// Two brokers, A and B, on one real redis-server and one SQLite user file (two nodes on one
// host): what a device publishes on A reaches a subscriber on B as it would on one node, a
// retained message stored through A is served by B, a code used on A is refused on B, and the
// ACL holds across nodes.
import t from 'tap'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import { codeForStep, stepAt } from '../../src/crypto/totp.js'
import { events, nextMessage, PASSWORD, startHarness, subackCode, type Harness } from '../helpers/harness.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { scratch } from '../helpers/scratch.js'

const redis = await startRedisServer()
t.teardown(() => redis.close())
const users = join(scratch('bastion-cluster-users-')(), 'users.db')

async function node (nodeId: string): Promise<Harness> {
  const h = await startHarness({
    auth: { store: { type: 'sqlite', path: users }, workers: 1 },
    cluster: { nodeId, redis: { host: '127.0.0.1', port: redis.port, keyPrefix: 'cluster-test:' } }
  })
  t.teardown(() => h.close())
  return h
}
const a = await node('a')
const b = await node('b')

/**
 * Codes of consecutive steps around now, computed once (the store claims steps in increasing
 * order). Waits out the last 5 s of a step so that all of them stay inside the window.
 */
async function codes (secret: string): Promise<string[]> {
  const intoStep = Date.now() % 30_000
  if (intoStep > 25_000) await new Promise((resolve) => setTimeout(resolve, 30_100 - intoStep))
  const step = stepAt()
  return [-1, 0, 1].map((d) => codeForStep(secret, step + d))
}

async function collect (c: MqttClient, count: number, ms: number): Promise<Array<{ payload: string; qos: number }>> {
  const got: Array<{ payload: string; qos: number }> = []
  return await new Promise((resolve) => {
    const on = (_topic: string, payload: Buffer, packet: any): void => { got.push({ payload: payload.toString(), qos: packet.qos }) }
    c.on('message', on)
    const start = Date.now()
    const timer = setInterval(() => {
      // Waits 500 ms past the expected count, so a duplicate would be seen.
      if (Date.now() - start > ms || (got.length >= count && Date.now() - start > 500)) {
        clearInterval(timer)
        c.off('message', on)
        resolve(got)
      }
    }, 250)
  })
}

const secret = await a.addUser('alice')
b.knowSecret('alice', secret)
const [subCode, deviceCode, laterCode] = await codes(secret)
const subscriber = await b.connect('alice', { username: `alice|${subCode}`, clientId: 'alice-dashboard' })
const device = await a.connect('alice', { username: `alice|${deviceCode}`, clientId: 'alice-sensor' })

t.test('a subscriber on B receives what a device on A publishes, QoS 0, 1 and 2, exactly once each and in order', async (t) => {
  t.equal(await subackCode(subscriber, 'metrics/alice/#', 2), 2)
  const N = 30
  for (const qos of [0, 1, 2] as const) {
    const arriving = collect(subscriber, N, 10_000)
    await Promise.all(Array.from({ length: N }, async (_, i) => await device.publishAsync('metrics/alice/Temperatura', `q${qos}-${i}`, { qos })))
    const got = await arriving
    t.same(got.map((m) => m.payload), Array.from({ length: N }, (_, i) => `q${qos}-${i}`), `QoS ${qos}: all ${N}, once, in order`)
    t.ok(got.every((m) => m.qos === qos), `QoS ${qos} delivered as QoS ${qos}`)
  }
})

t.test('a code used on A is refused on B: the step claim is in the shared user store', async (t) => {
  t.equal(await b.refused({ username: `alice|${deviceCode}`, password: PASSWORD }), 0x86)
  t.equal(events(b, 'login.failed').at(-1)?.reason, 'replayed_otp')
})

t.test('a retained message published on A is served by B', async (t) => {
  await device.publishAsync('metrics/alice/Estado', 'online', { qos: 1, retain: true })
  const late = await b.connect('alice', { username: `alice|${laterCode}`, clientId: 'alice-late' })
  const got = nextMessage(late, 5000)
  t.equal(await subackCode(late, 'metrics/alice/Estado', 1), 1)
  const m = await got
  t.equal(m?.payload, 'online')
  t.equal(m?.packet.retain, true, 'sent as a retained message')
  await late.endAsync()
})

t.test('the ACL holds across nodes: another user on B is refused alice\'s branch and gets nothing of it', async (t) => {
  const bobSecret = await a.addUser('bob')
  b.knowSecret('bob', bobSecret)
  const bob = await b.connect('bob', { clientId: 'bob-1' })
  // The metrics policy refuses, at SUBSCRIBE, every filter that can match outside bob's branch.
  t.equal(await subackCode(bob, 'metrics/alice/#', 1), 0x87)
  t.equal(await subackCode(bob, 'metrics/+/Temperatura', 1), 0x87)
  t.equal(await subackCode(bob, '#', 1), 0x87)
  t.equal(await subackCode(bob, 'metrics/bob/#', 1), 1)
  const bobGot = nextMessage(bob, 1500)
  const aliceGot = nextMessage(subscriber, 5000)
  await device.publishAsync('metrics/alice/Humedad', '41', { qos: 1 })
  t.equal((await aliceGot)?.payload, '41', 'alice\'s own subscriber on B has it')
  t.equal(await bobGot, undefined, 'bob has nothing')
  // A publish into alice's branch from B is refused there, so A never routes it.
  const refused = await bob.publishAsync('metrics/alice/Temperatura', '-40', { qos: 1 }).then(() => 0, (err: any) => err.code)
  t.equal(refused, 0x87)
  await bob.endAsync()
})

t.test('each node logs joining the cluster under its own broker id, and no line carries a secret', async (t) => {
  const joinedA = events(a, 'cluster.joined')[0]
  const joinedB = events(b, 'cluster.joined')[0]
  t.match(joinedA, { node: 'a', redis: `127.0.0.1:${redis.port}`, keyPrefix: 'cluster-test:' })
  t.match(joinedB?.brokerId, /^b\.[0-9a-f]{8}$/)
  t.equal(a.bastion.broker.id, joinedA?.brokerId)
  const text = JSON.stringify([...a.logs, ...b.logs])
  t.notMatch(text, PASSWORD)
  t.notMatch(text, /\w\|\d{6}/)
})
