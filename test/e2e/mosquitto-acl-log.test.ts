// Under Mosquitto's acl_file semantics a subscription to `#` is granted and each delivery is
// checked; refused deliveries must not flood the log with one warning per message.
import t from 'tap'
import mqtt from 'mqtt'
import { mosquittoFiles } from '../helpers/mosquitto-files.js'
import { events, nextMessage, startHarness } from '../helpers/harness.js'

const { passwd, acl } = mosquittoFiles('bastion-acl-log-', ['reader', 'writer'], 'user reader\ntopic read open/#\n\nuser writer\ntopic write open/#\ntopic write secret/#\n')

t.test('refused deliveries are logged once per client and minute; the metrics count every one', async (t) => {
  const h = await startHarness({ auth: { store: { type: 'mosquitto-passwd', path: passwd } }, acl: { policy: 'mosquitto-acl', file: acl }, monitoring: { enabled: true, port: 0 } })
  t.teardown(() => h.close())
  const opts = { host: '127.0.0.1', port: h.port, protocol: 'mqtts' as const, ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5 as const }
  const reader = await mqtt.connectAsync({ ...opts, username: 'reader', password: 'reader-password', clientId: 'r1' })
  t.teardown(() => reader.endAsync(true))
  const granted = await reader.subscribeAsync('#', { qos: 1 })
  t.equal(granted[0]?.qos, 1, '# is granted, as in Mosquitto 2.0')
  const writer = await mqtt.connectAsync({ ...opts, username: 'writer', password: 'writer-password', clientId: 'w1' })
  t.teardown(() => writer.endAsync(true))
  const seen: string[] = []
  reader.on('message', (topic) => seen.push(topic))
  for (let i = 0; i < 5; i++) await writer.publishAsync('secret/x', String(i), { qos: 1 })
  await writer.publishAsync('secret/y', 'y', { qos: 1 })
  const open = nextMessage(reader)
  await writer.publishAsync('open/x', 'hello', { qos: 1 })
  t.equal((await open)?.topic, 'open/x', 'a readable topic is delivered')
  t.same(seen, ['open/x'], 'nothing from secret/ reached the reader')
  const reads = events(h, 'acl.denied').filter((e) => e.action === 'read')
  t.match(reads, [{ level: 40, user: 'reader', clientId: 'r1', topic: 'secret/x' }], 'one line, at warn, with the first topic')
  const metrics = await (await fetch(`http://127.0.0.1:${h.bastion.monitoring?.port ?? 0}/metrics`)).text()
  t.match(metrics, /bastion_acl_denials_total\{action="read"\} 6\b/, 'all six refusals counted')
})
