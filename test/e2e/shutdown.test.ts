// SIGTERM against the built CLI: messages already acknowledged to their publisher reach the
// subscribers before the broker disconnects them, and the wait is bounded.
import t from 'tap'
import type { MqttClient } from 'mqtt'
import { cliBrokerFolder } from '../helpers/cli-broker.js'

const N = 300
const TOPIC = 'metrics/alice/Temperatura'
// Big enough that the subscriber's socket fills while it is not reading.
const PAD = 'x'.repeat(400)
// A burst of N messages is the point here, not what the rate limit does to it.
const LIMITS = ['limits: { publishRate: { messages: 10000 } }']

const folder = await cliBrokerFolder()
t.teardown(() => folder.close())
await folder.addUser('alice')

/**
 * A subscriber on a slow link: mqtt.js takes the next packet only when handleMessage calls
 * back, so while `gate` is shut nothing is read and the broker's output backs up.
 */
function slowSubscriber (c: MqttClient): { received: number[]; open: () => void; disconnected: Promise<number | undefined> } {
  const received: number[] = []
  let release: (() => void) | undefined
  const gate = new Promise<void>((resolve) => { release = resolve })
  c.handleMessage = (packet, callback) => {
    received.push(JSON.parse(packet.payload.toString()).value as number)
    void gate.then(() => callback())
  }
  const disconnected = new Promise<number | undefined>((resolve) => {
    c.once('disconnect', (p) => resolve(p.reasonCode))
    c.once('close', () => resolve(undefined))
  })
  return { received, open: () => release?.(), disconnected }
}

/** Publishes N QoS 1 messages as fast as mqtt.js sends them; resolves on the last PUBACK. */
async function publishAll (c: MqttClient): Promise<void> {
  let acked = 0
  await new Promise<void>((resolve, reject) => {
    for (let i = 1; i <= N; i++) {
      c.publish(TOPIC, JSON.stringify({ value: i, pad: PAD }), { qos: 1 }, (err) => {
        if (err !== undefined && err !== null) reject(err)
        else if (++acked === N) resolve()
      })
    }
  })
}

t.test('on SIGTERM every message acknowledged to the publisher reaches the subscriber, in order, before DISCONNECT 0x8B', async (t) => {
  const broker = await folder.start(folder.config(['shutdown: { drainTimeout: 10 }', ...LIMITS]))
  t.teardown(() => broker.kill())
  const sub = await broker.connect('alice')
  await sub.subscribeAsync(TOPIC, { qos: 1 })
  const slow = slowSubscriber(sub)
  const pub = await broker.connect('alice')

  await publishAll(pub)
  broker.proc.kill('SIGTERM')
  const draining = await broker.waitFor('broker.draining')
  // The subscriber catches up only after the stop began.
  slow.open()

  t.equal(await slow.disconnected, 0x8b, 'the subscriber is told the server is shutting down')
  t.same(slow.received, Array.from({ length: N }, (_, i) => i + 1), `all ${N} messages, in order, arrived before that`)
  t.equal(await broker.exited, 0, 'the broker exits 0')
  t.ok(draining.unacked + draining.unflushed + draining.publishes > 0, 'messages were still on their way at SIGTERM')
  t.match(broker.logs.find((l) => l.event === 'broker.drained'), { ms: Number }, 'the drain ended because everything was delivered')
  t.notOk(broker.logs.some((l) => l.event === 'broker.drain_timeout'), 'and not because time ran out')
  t.comment(`at SIGTERM: ${String(draining.publishes)} publishes, ${String(draining.unacked)} unacknowledged, ${String(draining.unflushed)} unflushed; drained in ${String(broker.logs.find((l) => l.event === 'broker.drained')?.ms)} ms`)
  await pub.endAsync(true).catch(() => {})
})

t.test('a PUBLISH that arrives during the drain is not acknowledged, so its publisher keeps it', async (t) => {
  const broker = await folder.start(folder.config(['shutdown: { drainTimeout: 10 }', ...LIMITS]))
  t.teardown(() => broker.kill())
  const sub = await broker.connect('alice')
  await sub.subscribeAsync(TOPIC, { qos: 1 })
  const slow = slowSubscriber(sub)
  const pub = await broker.connect('alice')
  await publishAll(pub)
  broker.proc.kill('SIGTERM')
  await broker.waitFor('broker.draining')
  let late: string | undefined
  pub.publish(TOPIC, JSON.stringify({ value: N + 1 }), { qos: 1 }, (err) => { late = err === undefined || err === null ? 'acknowledged' : String(err.message) })
  slow.open()
  t.equal(await slow.disconnected, 0x8b, 'the subscriber is told the server is shutting down')
  t.equal(await broker.exited, 0, 'the broker exits 0')
  t.not(late, 'acknowledged', 'the late PUBLISH got no PUBACK')
  t.notOk(slow.received.includes(N + 1), 'and was not delivered')
  t.equal(slow.received.length, N, 'what was acknowledged before SIGTERM was all delivered')
  await pub.endAsync(true).catch(() => {})
})

t.test('a subscriber that never reads holds the stop no longer than shutdown.drainTimeout', async (t) => {
  const broker = await folder.start(folder.config(['shutdown: { drainTimeout: 1 }', ...LIMITS]))
  t.teardown(() => broker.kill())
  const sub = await broker.connect('alice')
  await sub.subscribeAsync(TOPIC, { qos: 1 })
  slowSubscriber(sub) // the gate is never opened
  const pub = await broker.connect('alice')
  await publishAll(pub)
  const killed = Date.now()
  broker.proc.kill('SIGTERM')
  t.equal(await broker.exited, 0, 'the broker still exits 0')
  t.comment(`exited ${Date.now() - killed} ms after SIGTERM`)
  const timeout = broker.logs.find((l) => l.event === 'broker.drain_timeout') ?? {}
  t.match(timeout, { level: 40, unacked: Number, publishes: 0 }, 'and warns what was left undelivered')
  t.ok(timeout.unacked > 0, `${String(timeout.unacked)} messages unacknowledged, ${String(timeout.unflushed)} connection(s) with output still buffered`)
  t.ok(broker.logs.some((l) => l.event === 'broker.stopped'), 'and stops cleanly')
  sub.end(true)
  await pub.endAsync(true).catch(() => {})
})
