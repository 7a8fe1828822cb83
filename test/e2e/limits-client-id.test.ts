// limits.maxClientIdLength: a client id longer than it is refused at CONNECT, before any
// credential work, and only its start is ever logged.
import t from 'tap'
import { events, PASSWORD, startHarness } from '../helpers/harness.js'

t.test('a client id over maxClientIdLength: CONNACK 0x85 (3.1.1: 2), no login attempted, one short log line per address', async (t) => {
  const h = await startHarness({ limits: { maxClientIdLength: 32 }, auth: { totp: { replayProtection: false } } })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const ok = await h.connect('alice', { clientId: 'x'.repeat(32) })
  t.equal(ok.connected, true, 'exactly at the limit: accepted')
  await ok.endAsync()

  t.equal(await h.refused({ clientId: 'y'.repeat(33), username: `alice|${h.code('alice')}`, password: PASSWORD }), 0x85, 'one byte over: 0x85 Client Identifier not valid')
  t.equal(await h.refused({ clientId: 'é'.repeat(17), username: `alice|${h.code('alice')}`, password: PASSWORD }), 0x85, 'bytes of UTF-8 are counted, not characters (17 x 2 bytes)')
  t.equal(await h.refused({ clientId: 'z'.repeat(33), username: `alice|${h.code('alice')}`, password: PASSWORD, protocolVersion: 4 }), 2, '3.1.1: identifier rejected')

  const lines = events(h, 'limit.client_id')
  t.equal(lines.length, 1, 'one line for the address within the minute')
  t.match(lines[0], { level: 40, remote: '127.0.0.1', length: 33, max: 32, clientId: 'y'.repeat(33) })
  t.equal(events(h, 'login.ok').length, 1, 'only the accepted one logged in')
  t.equal(events(h, 'login.failed').length, 0, 'no credential check ran for the refused ones (no lockout count)')
})

t.test('hostile: a 60 000-byte client id (a CONNECT just under maxPacketSize) from many addresses is refused each time, logs stay short, the broker keeps serving', async (t) => {
  const h = await startHarness({ auth: { totp: { replayProtection: false } } })
  t.teardown(() => h.close())
  await h.addUser('alice')
  // 65 535 bytes would make the CONNECT bigger than limits.maxPacketSize (64 KiB): closed earlier.
  const huge = 'A'.repeat(60_000)
  const codes: number[] = []
  for (let i = 0; i < 20; i++) {
    codes.push(await h.refused({ clientId: huge, username: `alice|${h.code('alice')}`, password: PASSWORD, localAddress: `127.0.0.${2 + (i % 5)}` }))
  }
  t.same([...new Set(codes)], [0x85], 'every attempt refused with 0x85')
  const lines = events(h, 'limit.client_id')
  t.equal(lines.length, 5, 'one line per address and minute')
  const longest = Math.max(...h.logs.map((l) => JSON.stringify(l).length))
  t.ok(longest < 2000, `no log line carries the id (longest ${longest} characters)`)
  t.equal(lines[0]?.clientId, `${'A'.repeat(64)}...`, 'the refusal line shows its first 64 characters')
  const c = await h.connect('alice', { clientId: '__proto__' })
  t.equal(c.connected, true, 'a device with an ordinary id (even __proto__) still logs in')
  await c.endAsync()
})
