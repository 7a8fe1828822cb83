// The acknowledgements of a session that ends with its connection do not go to the persistence,
// which never held its in-flight messages (patches/aedes/0018): in the memory persistence each
// such call left an empty queue behind for the client id, forever. A session that resumed queued
// messages still clears them with its acknowledgements. A bare aedes over plain TCP on 127.0.0.1.
import t from 'tap'
import { connect as netConnect } from 'node:net'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { startBareBroker } from '../helpers/bare-aedes.js'

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
  const { broker, port } = await startBareBroker(t)
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
    const { broker, port } = await startBareBroker(t)
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

t.test('a resumed QoS 2 message refused with a PUBREC reason code >= 0x80 is cleared, with no PUBREL', async (t) => {
  const { broker, port } = await startBareBroker(t)
  const persistent = { clientId: 'refuser', clean: false, properties: { sessionExpiryInterval: 300 } }
  const first = await connect(t, port, persistent)
  await first.subscribeAsync('t', { qos: 2 })
  await first.endAsync()
  const pub = await connect(t, port, { clientId: 'refused-pub' })
  await pub.publishAsync('t', 'queued', { qos: 2 })

  // mqtt.js cannot refuse a delivery, so the resumed session is a raw MQTT 5 client: it answers
  // the queued PUBLISH with PUBREC 0x80 (Unspecified error), which ends that QoS 2 flow.
  const clears = countClears(t, broker)
  const socket = netConnect({ host: '127.0.0.1', port })
  t.teardown(() => socket.destroy())
  socket.on('error', () => {})
  const got: Array<Record<string, any>> = []
  const parser = mqttPacket.parser({ protocolVersion: 5 })
  parser.on('packet', (p) => {
    got.push(p)
    if (p.cmd === 'publish') socket.write(mqttPacket.generate({ cmd: 'pubrec', messageId: p.messageId, reasonCode: 0x80 }, { protocolVersion: 5 }))
  })
  socket.on('data', (d) => parser.parse(d))
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: false, clientId: persistent.clientId, keepalive: 60 }, { protocolVersion: 5 }))
  for (let i = 0; i < 100 && !got.some((p) => p.cmd === 'publish'); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(got.filter((p) => p.cmd === 'publish').map((p) => String(p.payload)), ['queued'], 'the queued message is delivered on resume')
  for (let i = 0; i < 100 && clears.calls === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.ok(clears.calls >= 1, 'the refusal cleared it from the persistence')
  t.notOk(got.some((p) => p.cmd === 'pubrel'), 'no PUBREL follows a refused PUBREC')
  socket.end(mqttPacket.generate({ cmd: 'disconnect' }, { protocolVersion: 5 }))
  await new Promise<void>((resolve) => socket.once('close', () => resolve()))

  const again = mqtt.connect({ host: '127.0.0.1', port, protocolVersion: 5, reconnectPeriod: 0, ...persistent })
  t.teardown(() => again.end(true))
  t.same(await collect(again, 1000), [], 'nothing is delivered a second time')
})
