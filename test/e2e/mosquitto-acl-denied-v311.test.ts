// Mosquitto drop-in: a 3.1.1 client publishing where the acl_file denies it is acknowledged and
// dropped, and keeps its connection (as Debian's mosquitto 2.0 does), unless
// acl.deniedPublishV311 says disconnect. aedes alone closes it (patches/aedes/0014).
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt from 'mqtt'
import { events, nextMessage, startHarness } from '../helpers/harness.js'
import { scratch } from '../helpers/scratch.js'

const dir = scratch('bastion-acl-v311-')()
const passwd = join(dir, 'passwd')
execFileSync('mosquitto_passwd', ['-c', '-b', passwd, 'reader', 'reader-password'])
execFileSync('mosquitto_passwd', ['-b', passwd, 'writer', 'writer-password'])
chmodSync(passwd, 0o600)
const acl = join(dir, 'acl')
writeFileSync(acl, 'user reader\ntopic read #\n\nuser writer\ntopic write open/#\n')

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
