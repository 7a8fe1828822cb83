// The drain tracker against a bare aedes over plain TCP on 127.0.0.1: what it counts as still on
// its way, and what hold() refuses.
import t from 'tap'
import { createServer, type AddressInfo } from 'node:net'
import type { AuthorizePublishHandler } from 'aedes'
import { Aedes } from '../src/engine/aedes.js'
import mqtt, { type MqttClient } from 'mqtt'
import { trackDeliveries } from '../src/shutdown.js'

const AUTH_DELAY_MS = 300

async function brokerWith (authorizePublish: AuthorizePublishHandler): Promise<{ broker: Aedes; port: number; close: () => Promise<void> }> {
  const broker = await Aedes.createBroker({ authorizePublish })
  const server = createServer((s) => broker.handle(s))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  return {
    broker,
    port,
    async close () {
      server.close()
      await new Promise<void>((resolve) => broker.close(() => resolve()))
    }
  }
}

const connect = async (port: number): Promise<MqttClient> =>
  await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: 5, reconnectPeriod: 0 })

t.test('a PUBLISH still being authorised when the drain starts is acknowledged and delivered before it ends', async (t) => {
  // An ACL backend that takes a while to answer (HTTP ACL, a database).
  const slowAcl: AuthorizePublishHandler = (_client, _packet, callback) => { setTimeout(() => callback(null), AUTH_DELAY_MS) }
  const { broker, port, close } = await brokerWith(slowAcl)
  t.teardown(close)
  const tracker = trackDeliveries(broker)
  const sub = await connect(port)
  t.teardown(() => sub.end(true))
  await sub.subscribeAsync('t', { qos: 1 })
  const received: string[] = []
  sub.on('message', (_topic, payload) => received.push(payload.toString()))
  const pub = await connect(port)
  t.teardown(() => pub.end(true))
  const acked: string[] = []
  for (const m of ['a', 'b', 'c']) pub.publish('t', m, { qos: 1 }, (err) => { if (err === undefined || err === null) acked.push(m) })

  for (let i = 0; i < 100 && tracker.pending().publishes < 3; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(tracker.pending().publishes, 3, 'three PUBLISHes are being authorised')
  t.equal(acked.length, 0, 'none acknowledged yet')
  tracker.hold()
  const left = await tracker.drain(5000)
  t.same(left, { publishes: 0, unacked: 0, unflushed: 0 }, 'the drain waited for them')
  t.same(received, ['a', 'b', 'c'], 'the subscriber has all three')
})

t.test('after hold() a new PUBLISH gets no PUBACK and reaches nobody; a will still goes out', async (t) => {
  const { broker, port, close } = await brokerWith((_c, _p, callback) => callback(null))
  t.teardown(close)
  const tracker = trackDeliveries(broker)
  const sub = await connect(port)
  t.teardown(() => sub.end(true))
  await sub.subscribeAsync('#', { qos: 1 })
  const received: string[] = []
  sub.on('message', (topic) => received.push(topic))
  const pub = await connect(port)
  t.teardown(() => pub.end(true))
  const willer = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: 5, reconnectPeriod: 0, will: { topic: 'will', payload: Buffer.from('gone'), qos: 1, retain: false } })

  tracker.hold()
  let answer: string | undefined
  pub.publish('late', 'x', { qos: 1 }, (err) => { answer = err === undefined || err === null ? 'PUBACK' : err.message })
  willer.stream.destroy()
  for (let i = 0; i < 100 && !received.includes('will'); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(received, ['will'], 'the will of a dropped client is published; the held PUBLISH is not')
  t.equal(answer, undefined, 'the held PUBLISH is unanswered')
  t.same(await tracker.drain(2000), { publishes: 0, unacked: 0, unflushed: 0 }, 'and is not waited for')
})

t.test('unacknowledged deliveries are counted across the packet id wrap (65535 -> 1)', async (t) => {
  const { broker, port, close } = await brokerWith((_c, _p, callback) => callback(null))
  t.teardown(close)
  // Registered before the tracker's own listener, so the tracker starts counting at 65534.
  broker.on('client', (c) => { (c as unknown as { _nextId: number })._nextId = 65534 })
  const tracker = trackDeliveries(broker)
  const sub = await connect(port)
  t.teardown(() => sub.end(true))
  await sub.subscribeAsync('t', { qos: 1 })
  const ids: number[] = []
  let release: (() => void) | undefined
  const gate = new Promise<void>((resolve) => { release = resolve })
  // mqtt.js sends the PUBACK only when handleMessage calls back: acknowledgements wait for the gate.
  sub.handleMessage = (packet, callback) => { ids.push(packet.messageId as number); void gate.then(() => callback()) }
  const pub = await connect(port)
  t.teardown(() => pub.end(true))
  for (let i = 0; i < 5; i++) await pub.publishAsync('t', String(i), { qos: 1 })
  // mqtt.js handles one packet at a time, so only the first reaches handleMessage while the gate is shut.
  for (let i = 0; i < 100 && (tracker.pending().unacked < 5 || ids.length === 0); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(ids, [65534], 'the first delivery took id 65534; the next ones took 65535, 1, 2, 3')
  t.equal(tracker.pending().unacked, 5, 'five deliveries wait for their PUBACK')
  release?.()
  t.same(await tracker.drain(5000), { publishes: 0, unacked: 0, unflushed: 0 }, 'and none once they came back')
})
