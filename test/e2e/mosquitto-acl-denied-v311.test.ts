// Mosquitto drop-in: a 3.1.1 client publishing where the acl_file denies it is acknowledged and
// dropped, and keeps its connection (as Debian's mosquitto 2.0 does), unless
// acl.deniedPublishV311 says disconnect. aedes alone closes it (patches/aedes/0014).
import t from 'tap'
import mqtt from 'mqtt'
import { mosquittoFiles } from '../helpers/mosquitto-files.js'
import { events, nextMessage, startHarness } from '../helpers/harness.js'

const { passwd, acl } = mosquittoFiles('bastion-acl-v311-', ['reader', 'writer'], 'user reader\ntopic read #\n\nuser writer\ntopic write open/#\n')

async function setup (t: { teardown: (fn: () => unknown) => void }, deniedPublishV311?: string) {
  const h = await startHarness({
    auth: { store: { type: 'mosquitto-passwd', path: passwd } },
    acl: { policy: 'mosquitto-acl', file: acl, ...(deniedPublishV311 === undefined ? {} : { deniedPublishV311 }) }
  })
  t.teardown(() => h.close())
  const opts = { host: '127.0.0.1', port: h.port, protocol: 'mqtts' as const, ca: h.ca, servername: 'localhost', reconnectPeriod: 0 }
  const reader = await mqtt.connectAsync({ ...opts, protocolVersion: 5, username: 'reader', password: 'reader-password', clientId: 'r1' })
  t.teardown(() => reader.endAsync(true))
  await reader.subscribeAsync('#', { qos: 2 })
  const writer = await mqtt.connectAsync({ ...opts, protocolVersion: 4, username: 'writer', password: 'writer-password', clientId: 'w1' })
  t.teardown(() => writer.endAsync(true))
  let closed = false
  writer.on('close', () => { closed = true })
  const seen: string[] = []
  reader.on('message', (topic) => seen.push(topic))
  return { h, reader, writer, seen, isClosed: () => closed }
}

t.test('by default a denied 3.1.1 publish is acknowledged at every QoS, dropped, and the connection stays', async (t) => {
  const { h, reader, writer, seen, isClosed } = await setup(t)
  for (const qos of [0, 1, 2] as const) {
    // publishAsync resolves on PUBACK (QoS 1) / PUBCOMP (QoS 2): the whole flow completed.
    await writer.publishAsync('secret/x', `denied-${qos}`, { qos })
  }
  const open = nextMessage(reader)
  await writer.publishAsync('open/x', 'hello', { qos: 1 })
  t.equal((await open)?.topic, 'open/x', 'the same connection still publishes where it may')
  t.same(seen, ['open/x'], 'none of the denied messages was delivered')
  t.equal(isClosed(), false, 'the connection was kept')
  t.equal(writer.connected, true)
  t.match(events(h, 'acl.denied'), [{ user: 'writer', clientId: 'w1', action: 'publish', topic: 'secret/x' }], 'the refusal is logged')
  t.equal(events(h, 'will.published').length, 0, 'no will fired')
})

t.test('acl.deniedPublishV311: disconnect closes the 3.1.1 connection instead', async (t) => {
  const { h, writer, seen, isClosed } = await setup(t, 'disconnect')
  const closing = new Promise<void>((resolve) => writer.once('close', () => resolve()))
  writer.publish('secret/x', 'denied', { qos: 1 })
  await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 5000))])
  t.equal(isClosed(), true, 'the connection was closed')
  t.notOk(seen.includes('secret/x'), 'the denied message was not delivered')
  t.match(events(h, 'will.published'), [{ user: 'writer', clientId: 'w1', source: 'server' }], 'the device counts as dropped: its server will fires')
  t.match(events(h, 'acl.denied'), [{ user: 'writer', action: 'publish', topic: 'secret/x' }])
})

t.test('a flood of denied 3.1.1 publishes, now answered instead of cut off, meets the publish rate', async (t) => {
  const { h, reader, writer, seen, isClosed } = await setup(t)
  const closing = new Promise<void>((resolve) => writer.once('close', () => resolve()))
  // 400 denied publishes at once: four times limits.publishRate.messages (100 a second).
  for (let i = 0; i < 400; i++) writer.publish(`secret/${i % 7}`, `flood-${i}`, { qos: 1 })
  await Promise.race([closing, new Promise((resolve) => setTimeout(resolve, 10_000))])
  t.equal(isClosed(), true, 'the flooding client is disconnected by the publish rate')
  t.match(events(h, 'limit.publish_rate'), [{ clientId: 'w1' }], 'and the limit says so')
  t.ok(events(h, 'acl.denied').length <= 2, `the refusals are logged once, not 400 times (${events(h, 'acl.denied').length})`)
  t.notOk(seen.some((topic) => topic.startsWith('secret/')), 'nothing denied was delivered')
  const open = new Promise<string>((resolve) => reader.on('message', (topic, payload) => { if (topic === 'open/after') resolve(payload.toString()) }))
  const other = await mqtt.connectAsync({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 4, username: 'writer', password: 'writer-password', clientId: 'w2' })
  t.teardown(() => other.endAsync(true))
  await other.publishAsync('open/after', 'still-up', { qos: 1 })
  t.equal(await Promise.race([open, new Promise((resolve) => setTimeout(resolve, 5000))]), 'still-up', 'the broker keeps serving')
})
