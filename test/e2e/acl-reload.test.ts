// Answers a connection was already given (remembered per connection and topic:
// src/acl/decision-cache.ts) do not outlive a reload of the rules: after SIGHUP's reload, the
// same connection is refused what the new acl_file denies, for publishes and for deliveries.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import mqtt from 'mqtt'
import { mosquittoFiles } from '../helpers/mosquitto-files.js'
import { events, nextMessage, pubackCode, startHarness } from '../helpers/harness.js'

const { passwd, acl } = mosquittoFiles('bastion-acl-reload-', ['reader', 'writer'], 'user reader\ntopic read open/#\n\nuser writer\ntopic write open/#\n')

t.test('a reloaded acl_file applies at once to connected clients, whatever they were allowed before', async (t) => {
  const h = await startHarness({ auth: { store: { type: 'mosquitto-passwd', path: passwd } }, acl: { policy: 'mosquitto-acl', file: acl } })
  t.teardown(() => h.close())
  const opts = { host: '127.0.0.1', port: h.port, protocol: 'mqtts' as const, ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5 as const }
  const reader = await mqtt.connectAsync({ ...opts, username: 'reader', password: 'reader-password', clientId: 'r1' })
  t.teardown(() => reader.endAsync(true))
  await reader.subscribeAsync('#', { qos: 1 })
  const writer = await mqtt.connectAsync({ ...opts, username: 'writer', password: 'writer-password', clientId: 'w1' })
  t.teardown(() => writer.endAsync(true))
  for (let i = 0; i < 3; i++) {
    const got = nextMessage(reader)
    t.equal(await pubackCode(writer, 'open/a', `before-${i}`), 0, `publish ${i} accepted`)
    t.equal((await got)?.payload, `before-${i}`, `delivery ${i} made`)
  }
  // The writer loses open/a, the reader loses open/b; both stay connected.
  writeFileSync(acl, 'user reader\ntopic read open/a\n\nuser writer\ntopic write open/b\n')
  await h.bastion.reload()
  t.ok(events(h, 'reload.ok').some((e) => e.what === 'acl policy'), 'the acl policy reloaded')
  t.equal(await pubackCode(writer, 'open/a', 'after'), 0x87, 'the same connection, the same topic: now PUBACK 0x87')
  const got = nextMessage(reader, 1500)
  t.equal(await pubackCode(writer, 'open/b', 'after-b'), 0, 'the newly granted topic is accepted')
  t.equal(await got, undefined, 'and not delivered to a reader that lost it')
  t.match(events(h, 'acl.denied'), [{ user: 'writer', action: 'publish', topic: 'open/a' }, { user: 'reader', action: 'read', topic: 'open/b' }])
})
