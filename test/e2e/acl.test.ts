// The metrics policy seen by real clients: PUBACK/SUBACK codes, delivery, and the log.
import t from 'tap'
import { events, nextMessage, pubackCode, startHarness, subackCode } from '../helpers/harness.js'

// Replay protection is off here so one user can open several connections within a step; the
// tests below send their SUBSCRIBEs one after the other, faster than limits.subscribeRate allows
// (test/e2e/log-flood.test.ts covers that limit).
const h = await startHarness({ auth: { totp: { replayProtection: false } }, limits: { subscribeRate: { packets: 1000 } } })
t.teardown(() => h.close())
await h.addUser('alice')
await h.addUser('bob')

t.test('a QoS 1 metric reaches its owner\'s subscriber with PUBACK 0 (MQTT 5)', async (t) => {
  const sub = await h.connect('alice', { clientId: 'alice-dash' })
  const granted = await sub.subscribeAsync('metrics/alice/#', { qos: 1 })
  t.equal(granted[0]?.qos, 1)
  const pub = await h.connect('alice', { clientId: 'alice-dev', offset: 1 })
  const got = nextMessage(sub)
  t.equal(await pubackCode(pub, 'metrics/alice/Temperatura', '{"value":22.5}'), 0, 'PUBACK success')
  const m = await got
  t.equal(m?.topic, 'metrics/alice/Temperatura')
  t.equal(m?.payload, '{"value":22.5}')
  await pub.endAsync()
  await sub.endAsync()
})

t.test('subscriptions outside the own branch get SUBACK 0x87 (v5) and 0x80 (3.1.1)', async (t) => {
  const v5 = await h.connect('bob', { clientId: 'bob-v5' })
  const v3 = await h.connect('bob', { clientId: 'bob-v3', protocolVersion: 4, offset: 1 })
  const allowed = ['metrics/bob/#', 'metrics/bob/+', 'metrics/bob/Temperatura']
  const deniedFilters = ['#', 'metrics/#', '+/bob/#', 'metrics/+/Temperatura', 'metrics/alice/#', 'metrics/alice/Temperatura', '$SYS/#', '$SYS/broker/uptime', '$other/x', 'metrics/bob', 'other/bob/#']
  for (const f of allowed) {
    t.equal(await subackCode(v5, f), 1, `v5 ${f} allowed`)
    t.equal(await subackCode(v3, f), 1, `3.1.1 ${f} allowed`)
  }
  for (const f of deniedFilters) {
    t.equal(await subackCode(v5, f), 0x87, `v5 ${f} denied`)
    t.equal(await subackCode(v3, f), 0x80, `3.1.1 ${f} denied`)
  }
  // A client can repeat a refused SUBSCRIBE at will: one line per client, action and minute.
  const logged = events(h, 'acl.denied').filter((e) => e.action === 'subscribe')
  t.equal(logged.length, 2, 'one line per client')
  t.match(logged[0], { user: 'bob', clientId: 'bob-v5', action: 'subscribe', topic: deniedFilters[0], remote: '127.0.0.1' }, 'the first denial of each, with its filter')
  t.match(logged[1], { user: 'bob', clientId: 'bob-v3', action: 'subscribe', topic: deniedFilters[0], remote: '127.0.0.1' })
  t.equal(v5.connected && v3.connected, true, 'both stay connected')
  await v5.endAsync()
  await v3.endAsync()
})

t.test('publishes outside the own leaves get PUBACK 0x87 and the connection stays up', async (t) => {
  const spy = await h.connect('alice', { clientId: 'alice-spy', offset: 1 })
  await spy.subscribeAsync('metrics/alice/#', { qos: 1 })
  const bob = await h.connect('bob', { clientId: 'bob-pub', offset: 1 })
  const seen: string[] = []
  spy.on('message', (topic) => seen.push(topic))
  for (const topic of ['metrics/alice/Temperatura', 'metrics/bob/Presion', 'metrics/bob', 'metrics/bob/Temperatura/x', '$SYS/x', 'other/bob/Estado']) {
    t.equal(await pubackCode(bob, topic, 'x'), 0x87, `${topic} refused with 0x87`)
  }
  t.match(events(h, 'acl.denied').filter((e) => e.clientId === 'bob-pub'), [{ user: 'bob', action: 'publish', topic: 'metrics/alice/Temperatura' }], 'logged once for the client, with the first topic')
  t.equal(await pubackCode(bob, 'metrics/bob/Humedad', '41'), 0, 'an allowed publish still works afterwards')
  await bob.publishAsync('metrics/alice/Estado', 'x', { qos: 0 })
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.same(seen, [], 'nothing reached alice\'s branch')
  t.equal(bob.connected, true)
  await bob.endAsync()
  await spy.endAsync()
})

t.test('a denied publish from a 3.1.1 client closes its connection (it has no reason codes)', async (t) => {
  const c = await h.connect('bob', { clientId: 'bob-311', protocolVersion: 4, offset: 1 })
  const closed = new Promise((resolve) => c.once('close', resolve))
  c.publish('metrics/alice/Temperatura', 'x', { qos: 1 })
  await closed
  t.match(events(h, 'acl.denied').at(-1), { user: 'bob', clientId: 'bob-311', action: 'publish', topic: 'metrics/alice/Temperatura' })
})

t.test('the will topic must pass the publish policy: CONNECT refused with 0x87 / 5', async (t) => {
  t.equal(await h.refused({ username: `alice|${h.code('alice', 1)}`, password: 'correct horse battery', will: { topic: 'metrics/bob/Estado', payload: Buffer.from('x'), qos: 1, retain: false } }), 0x87)
  t.equal(events(h, 'login.failed').at(-1)?.reason, 'will_denied')
})
