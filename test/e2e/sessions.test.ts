// Ephemeral sessions and last wills, over real TLS.
import t from 'tap'
import { events, nextMessage, startHarness } from '../helpers/harness.js'

const h = await startHarness({ auth: { totp: { replayProtection: false } } })
t.teardown(() => h.close())
await h.addUser('dev1')

/** Drops the TCP connection under the client: no DISCONNECT reaches the broker. */
function drop (c: any): void {
  c.stream.destroy()
}

t.test('a 3.1.1 clean=false session is treated as clean: no session, no queued messages', async (t) => {
  const first = await h.connect('dev1', { clientId: 'dev1-persist', protocolVersion: 4, clean: false })
  t.equal(first.connected, true)
  await first.subscribeAsync('metrics/dev1/#', { qos: 1 })
  await first.endAsync()
  const pub = await h.connect('dev1', { clientId: 'dev1-pub' })
  await pub.publishAsync('metrics/dev1/Estado', 'while away', { qos: 1 })
  const again = await h.connect('dev1', { clientId: 'dev1-persist', protocolVersion: 4, clean: false, offset: 1 })
  const connack = await new Promise<any>((resolve) => {
    // mqtt.js keeps the CONNACK it got; sessionPresent lives there.
    resolve((again as any).connackPacket)
  })
  t.equal(connack?.sessionPresent, false, 'CONNACK sessionPresent false')
  t.equal(await nextMessage(again, 500), undefined, 'the message sent while away is not delivered')
  // Listening first: a delivery may arrive before the PUBACK does.
  const none = nextMessage(again, 500)
  await pub.publishAsync('metrics/dev1/Estado', 'now', { qos: 1 })
  t.equal(await none, undefined, 'the old subscription did not survive')
  await again.endAsync()
  await pub.endAsync()
})

t.test('an MQTT 5 Session Expiry request is capped to 0 and echoed in CONNACK', async (t) => {
  const c = await h.connect('dev1', { clientId: 'dev1-v5', clean: false, properties: { sessionExpiryInterval: 3600 } })
  const connack = (c as any).connackPacket
  t.equal(connack?.properties?.sessionExpiryInterval, 0)
  await c.subscribeAsync('metrics/dev1/#', { qos: 1 })
  await c.endAsync()
  const pub = await h.connect('dev1', { clientId: 'dev1-pub2' })
  await pub.publishAsync('metrics/dev1/Estado', 'queued?', { qos: 1 })
  const again = await h.connect('dev1', { clientId: 'dev1-v5', clean: false, properties: { sessionExpiryInterval: 3600 } })
  t.equal((again as any).connackPacket?.sessionPresent, false)
  t.equal(await nextMessage(again, 500), undefined, 'nothing queued')
  await again.endAsync()
  await pub.endAsync()
})

t.test('a configured cap above 0 lets MQTT 5 sessions live that long', async (t) => {
  const h2 = await startHarness({ sessions: { maxExpiry: 60 }, auth: { totp: { replayProtection: false } } })
  t.teardown(() => h2.close())
  await h2.addUser('dev2')
  const c = await h2.connect('dev2', { clientId: 'dev2-keep', clean: false, properties: { sessionExpiryInterval: 3600 } })
  t.equal((c as any).connackPacket?.properties?.sessionExpiryInterval, 60, 'capped to 60 and echoed')
  await c.subscribeAsync('metrics/dev2/#', { qos: 1 })
  await c.endAsync()
  const pub = await h2.connect('dev2', { clientId: 'dev2-pub' })
  await pub.publishAsync('metrics/dev2/Estado', 'queued', { qos: 1 })
  const again = await h2.connect('dev2', { clientId: 'dev2-keep', clean: false, properties: { sessionExpiryInterval: 60 } })
  t.equal((again as any).connackPacket?.sessionPresent, true)
  t.equal((await nextMessage(again, 2000))?.payload, 'queued')
  await again.endAsync()
  await pub.endAsync()
})

t.test('the client will is published on a socket drop and not on a clean DISCONNECT', async (t) => {
  const watcher = await h.connect('dev1', { clientId: 'dev1-watch' })
  await watcher.subscribeAsync('metrics/dev1/Estado', { qos: 1 })
  const will = { topic: 'metrics/dev1/Estado', payload: Buffer.from('offline'), qos: 1 as const, retain: false, properties: { willDelayInterval: 0 } }

  const clean = await h.connect('dev1', { clientId: 'dev1-clean', will })
  await clean.endAsync()
  t.equal(await nextMessage(watcher, 500), undefined, 'no will after DISCONNECT')

  for (const protocolVersion of [5, 4] as const) {
    const dropped = await h.connect('dev1', { clientId: `dev1-drop-${protocolVersion}`, will, protocolVersion })
    const got = nextMessage(watcher, 3000)
    drop(dropped)
    const m = await got
    t.equal(m?.payload, 'offline', `v${protocolVersion} will delivered`)
    t.equal(m?.packet?.properties?.willDelayInterval, undefined, 'the will PUBLISH carries no Will Delay Interval')
  }
  t.ok(events(h, 'will.published').some((e) => e.source === 'client' && e.clientId === 'dev1-drop-5'))
  await watcher.endAsync()
})

t.test('a client without a will that drops gets the server will on metrics/<user>/Estado', async (t) => {
  const watcher = await h.connect('dev1', { clientId: 'dev1-watch2' })
  await watcher.subscribeAsync('metrics/dev1/Estado', { qos: 1 })
  const c = await h.connect('dev1', { clientId: 'dev1-nowill' })
  const got = nextMessage(watcher, 3000)
  drop(c)
  const m = await got
  t.ok(m, 'server will delivered')
  const body = JSON.parse(m?.payload ?? '{}')
  t.equal(body.status, 'unsafe_disconnection')
  t.equal(body.clientId, 'dev1-nowill')
  t.ok(!Number.isNaN(Date.parse(body.at)), 'with a timestamp')
  t.equal(m?.packet?.qos, 1)
  t.equal(m?.packet?.retain, false)
  t.ok(events(h, 'client.unclean_disconnect').some((e) => e.clientId === 'dev1-nowill'))

  const polite = await h.connect('dev1', { clientId: 'dev1-polite' })
  await polite.endAsync()
  t.equal(await nextMessage(watcher, 500), undefined, 'no server will after a clean DISCONNECT')
  await watcher.endAsync()
})

t.test('serverWill: false turns the server will off', async (t) => {
  const h3 = await startHarness({ will: { serverWill: false }, auth: { totp: { replayProtection: false } } })
  t.teardown(() => h3.close())
  await h3.addUser('dev3')
  const watcher = await h3.connect('dev3', { clientId: 'w' })
  await watcher.subscribeAsync('metrics/dev3/#', { qos: 1 })
  const c = await h3.connect('dev3', { clientId: 'x' })
  drop(c)
  t.equal(await nextMessage(watcher, 1000), undefined)
  await watcher.endAsync()
})
