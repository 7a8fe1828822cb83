// What waits for a free slot of a subscriber's Receive Maximum (patches/aedes/0004) counts
// towards limits.maxQueuedBytes like bytes in its socket: a subscriber that announces a small
// Receive Maximum and never acknowledges is disconnected (0x97), not queued for without end.
import t from 'tap'
import { startHarness } from '../helpers/harness.js'
import { until } from '../helpers/limits.js'

const h = await startHarness({
  limits: { maxQueuedBytes: 65536, publishRate: { messages: 10000, bytes: 16 * 1024 * 1024 } },
  auth: { totp: { replayProtection: false } }
})
t.teardown(() => h.close())
await h.addUser('slow')

t.test('a subscriber with Receive Maximum 1 that never acknowledges is disconnected past maxQueuedBytes', async (t) => {
  const sub = await h.connect('slow', { clientId: 'slow-sub', properties: { receiveMaximum: 1 } })
  let closed = false
  sub.on('close', () => { closed = true })
  let received = 0
  // Never acknowledged: the broker may have one PUBLISH in flight to it, the rest wait. (mqtt.js
  // reads nothing more either, so the DISCONNECT 0x97 that precedes the close is not seen here;
  // test/e2e/limits-packets.test.ts reads it with a raw client.)
  sub.handleMessage = (_packet, _callback) => { received++ }
  await sub.subscribeAsync('metrics/slow/#', { qos: 1 })
  const pub = await h.connect('slow', { clientId: 'slow-pub' })
  t.teardown(() => { pub.end(true); sub.end(true) })
  const payload = 'x'.repeat(8192)
  // 20 x 8 KiB: 160 KiB for a subscriber allowed 64 KiB.
  for (let i = 0; i < 20; i++) await pub.publishAsync('metrics/slow/Temperatura', payload, { qos: 1 })
  t.ok(h.logs.some((l) => l.event === 'limit.queue' && l.clientId === 'slow-sub'), 'limit.queue is logged for it')
  t.ok(await until(8000, () => closed), 'and its connection is closed')
  t.equal(received, 1, 'it was sent one PUBLISH, its Receive Maximum')
})
