// The acknowledgements of a session that ends with its connection do not go to the persistence,
// which never held its in-flight messages (patches/aedes/0018): in the memory persistence each
// such call left an empty queue behind for the client id, forever. A session that resumed queued
// messages still clears them with its acknowledgements. A bare aedes over plain TCP on 127.0.0.1.
import t from 'tap'
import { createServer, type AddressInfo } from 'node:net'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { Aedes } from '../../src/engine/aedes.js'

async function startBroker (t: Tap.Test): Promise<{ broker: Aedes; port: number }> {
  const broker = await Aedes.createBroker({})
  const server = createServer((s) => broker.handle(s))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.close()
    await new Promise<void>((resolve) => broker.close(() => resolve()))
  })
  return { broker, port: (server.address() as AddressInfo).port }
}

async function connect (t: Tap.Test, port: number, opts: IClientOptions): Promise<MqttClient> {
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port, protocolVersion: 5, reconnectPeriod: 0, ...opts })
  t.teardown(() => c.end(true))
  return c
}

/** Resolves with the payloads `c` receives within `ms`. */
function collect (c: MqttClient, ms: number): Promise<string[]> {
  const got: string[] = []
  const on = (_topic: string, payload: Buffer): void => { got.push(payload.toString()) }
  c.on('message', on)
  return new Promise((resolve) => setTimeout(() => { c.off('message', on); resolve(got) }, ms))
}

/** Counts calls of the persistence's outgoingClearMessageId from now on. */
function countClears (t: Tap.Test, broker: Aedes): { calls: number } {
  const persistence = broker.persistence as unknown as { outgoingClearMessageId: (...a: unknown[]) => Promise<unknown> }
  const original = persistence.outgoingClearMessageId
  const counter = { calls: 0 }
  persistence.outgoingClearMessageId = function (this: unknown, ...a: unknown[]) { counter.calls++; return original.apply(this, a) }
  t.teardown(() => { persistence.outgoingClearMessageId = original })
  return counter
}

t.test('PUBACKs of a clean session make no persistence call, and each is still an ack event', async (t) => {
  const { broker, port } = await startBroker(t)
  const sub = await connect(t, port, { clientId: 'clean-sub', clean: true })
  await sub.subscribeAsync('t', { qos: 1 })
  const pub = await connect(t, port, { clientId: 'clean-pub' })
  const clears = countClears(t, broker)
  let acks = 0
  broker.on('ack', (_packet, client) => { if (client.id === 'clean-sub') acks++ })
  const got = collect(sub, 1000)
  for (let i = 1; i <= 10; i++) await pub.publishAsync('t', `m${i}`, { qos: 1 })
  t.equal((await got).length, 10, 'all 10 delivered')
  t.equal(acks, 10, 'one ack event per PUBACK')
  t.equal(clears.calls, 0, 'no outgoingClearMessageId for a session that never stored its deliveries')
})

for (const qos of [1, 2] as const) {
  t.test(`a session that resumed a queued QoS ${qos} message clears it with its ${qos === 1 ? 'PUBACK' : 'PUBREC/PUBCOMP'}`, async (t) => {
    const { broker, port } = await startBroker(t)
    const persistent = { clientId: `resumer${qos}`, clean: false, properties: { sessionExpiryInterval: 300 } }
    const first = await connect(t, port, persistent)
    await first.subscribeAsync('t', { qos })
    await first.endAsync()
    const pub = await connect(t, port, { clientId: `resume-pub${qos}` })
    await pub.publishAsync('t', 'queued', { qos })

    // Resumed without a Session Expiry: the session now ends with this connection (client.clean),
    // and its queued message comes from the persistence.
    const clears = countClears(t, broker)
    const resumed = mqtt.connect({ host: '127.0.0.1', port, protocolVersion: 5, reconnectPeriod: 0, clientId: persistent.clientId, clean: false })
    t.teardown(() => resumed.end(true))
    const got = collect(resumed, 1000)
    t.same(await got, ['queued'], 'the queued message is delivered on resume')
    t.ok(clears.calls >= 1, 'its acknowledgement cleared it from the persistence')
    await resumed.endAsync()

    // Had the acknowledgement skipped the persistence, the message would still be queued for this id.
    const again = mqtt.connect({ host: '127.0.0.1', port, protocolVersion: 5, reconnectPeriod: 0, ...persistent })
    t.teardown(() => again.end(true))
    t.same(await collect(again, 1000), [], 'nothing is delivered a second time')
  })
}
