// Brute-force lockout over real TLS with mqtt.js: per account and per source address (a
// second loopback address, 127.0.0.2, plays the attacker), CONNACK codes, log lines, metrics.
import t from 'tap'
import tls from 'node:tls'
import type { IClientOptions } from 'mqtt'
import { events, PASSWORD, startHarness, type Harness } from '../helpers/harness.js'

const ATTACKER = { localAddress: '127.0.0.2' } as IClientOptions

/** Polls the captured log for `event` (bounded: 50 × 100 ms). */
async function waitFor (h: Harness, event: string, count = 1): Promise<boolean> {
  for (let i = 0; i < 50 && events(h, event).length < count; i++) await new Promise((resolve) => setTimeout(resolve, 100))
  return events(h, event).length >= count
}

/** Opens TLS from `localAddress`: 'closed' when the broker closes the socket before the handshake ends. */
async function closedBeforeTls (h: Harness, localAddress: string): Promise<'closed' | 'handshake'> {
  return await new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: h.port, localAddress, ca: h.ca, servername: 'localhost' })
    s.once('secureConnect', () => { s.destroy(); resolve('handshake') })
    s.once('error', () => {})
    s.once('close', () => resolve('closed'))
  })
}

async function metricsText (h: Harness): Promise<string> {
  const m = h.bastion.monitoring
  const r = await fetch(`http://${m?.host ?? ''}:${m?.port ?? 0}/metrics`)
  return await r.text()
}

t.test('per account: past the threshold the right password is refused with 0x86 until the lockout ends', async (t) => {
  const h = await startHarness({
    auth: { lockout: { window: 60, maxFailuresPerUser: 3, maxFailuresPerIp: 0, duration: 2, maxDuration: 2 } },
    monitoring: { enabled: true, port: 0 }
  })
  t.teardown(() => h.close())
  await h.addUser('alice')
  await h.addUser('bob')
  for (let i = 0; i < 3; i++) {
    t.equal(await h.refused({ username: `alice|${h.code('alice')}`, password: 'wrong password' }), 0x86, `guess ${i + 1}`)
  }
  t.same(events(h, 'login.failed').map((e) => e.reason), ['bad_password', 'bad_password', 'bad_password'])
  const [lock] = events(h, 'auth.lockout')
  t.match(lock, { level: 40, scope: 'user', user: 'alice', remote: '127.0.0.1', failures: 3, seconds: 2 })

  t.equal(await h.refused({ username: `alice|${h.code('alice')}`, password: PASSWORD }), 0x86, 'the right password, v5')
  t.match(events(h, 'login.failed').at(-1), { reason: 'locked_out', user: 'alice', remote: '127.0.0.1' })
  t.equal(await h.refused({ username: `alice|${h.code('alice')}`, password: PASSWORD, protocolVersion: 4 }), 4, 'the right password, 3.1.1')
  t.equal(events(h, 'login.failed').filter((e) => e.reason === 'locked_out').length, 1,
    'a repeat from the same address for the same account is not logged again within the minute')
  t.match(await metricsText(h), /bastion_logins_total\{result="failed",reason="locked_out"\} 2/, 'but it is counted')

  const bob = await h.connect('bob')
  t.equal(bob.connected, true, 'another account from the same address logs in')
  await bob.endAsync()
  t.equal(events(h, 'auth.lockout').length, 1, 'the lockout is logged once')
  t.match(await metricsText(h), /bastion_lockouts_total\{scope="user"\} 1/)

  t.ok(await waitFor(h, 'auth.lockout_ended'), 'the end is logged without another attempt')
  t.match(events(h, 'auth.lockout_ended'), [{ level: 30, scope: 'user', user: 'alice' }])
  const alice = await h.connect('alice')
  t.equal(alice.connected, true, 'the right password works again')
  await alice.endAsync()
  t.equal(events(h, 'auth.lockout_ended').length, 1, 'the end is logged once')
})

t.test('an unknown account gets the same refusals as a real one (counted from that address: it proves nothing)', async (t) => {
  const h = await startHarness({ auth: { lockout: { window: 60, maxFailuresPerUser: 2, maxFailuresPerIp: 0, duration: 60, maxDuration: 60 } } })
  t.teardown(() => h.close())
  await h.addUser('carol')
  for (const user of ['carol', 'nobody']) {
    for (let i = 0; i < 2; i++) t.equal(await h.refused({ username: `${user}|${h.code('carol')}`, password: 'wrong password' }), 0x86)
    t.equal(await h.refused({ username: `${user}|${h.code('carol')}`, password: PASSWORD }), 0x86, `${user}: locked out`)
  }
  t.same(events(h, 'login.failed').map((e) => [e.user, e.reason]), [
    ['carol', 'bad_password'], ['carol', 'bad_password'], ['carol', 'locked_out'],
    ['nobody', 'unknown_user'], ['nobody', 'unknown_user'], ['nobody', 'locked_out']
  ])
  t.same(events(h, 'auth.lockout').map((e) => [e.scope, e.user, e.failures, e.seconds]), [['user', 'carol', 2, 60], ['user_ip', 'nobody', 2, 60]])
})

t.test('per address: guesses at many accounts lock the address, not the accounts', async (t) => {
  const h = await startHarness({ auth: { lockout: { window: 60, maxFailuresPerUser: 0, maxFailuresPerIp: 3, duration: 1, maxDuration: 1 } } })
  t.teardown(() => h.close())
  await h.addUser('dave')
  for (const user of ['u1', 'u2', 'u3']) {
    t.equal(await h.refused({ username: `${user}|123456`, password: 'guess', ...ATTACKER }), 0x86)
  }
  t.match(events(h, 'auth.lockout'), [{ scope: 'ip', remote: '127.0.0.2', failures: 3, seconds: 1 }])
  t.equal(await closedBeforeTls(h, '127.0.0.2'), 'closed', 'a socket from the locked address is closed before its TLS handshake')
  t.equal(await closedBeforeTls(h, '127.0.0.2'), 'closed')
  t.match(events(h, 'connection.locked_out'), [{ remote: '127.0.0.2' }], 'logged once for the two')
  const dave = await h.connect('dave')
  t.equal(dave.connected, true, 'the same account from another address logs in')
  await dave.endAsync()
  t.ok(await waitFor(h, 'auth.lockout_ended'))
  t.match(events(h, 'auth.lockout_ended'), [{ scope: 'ip', remote: '127.0.0.2' }])
})

t.test('per account from another address: the owner logs in while an attacker\'s address is locked', async (t) => {
  const h = await startHarness({ auth: { lockout: { window: 60, maxFailuresPerUser: 5, maxFailuresPerIp: 3, duration: 60, maxDuration: 60 } } })
  t.teardown(() => h.close())
  await h.addUser('erin')
  for (let i = 0; i < 3; i++) await h.refused({ username: `erin|${h.code('erin')}`, password: 'guess', ...ATTACKER })
  t.same(events(h, 'login.failed').map((e) => e.reason), ['bad_password', 'bad_password', 'bad_password'])
  t.equal(await closedBeforeTls(h, '127.0.0.2'), 'closed', 'three guesses, then the address is locked')
  const erin = await h.connect('erin')
  t.equal(erin.connected, true, 'below the account threshold the owner is not locked out')
  await erin.endAsync()
})

t.test('bogus logins for an account from ten addresses do not lock its device out (default thresholds)', async (t) => {
  const h = await startHarness({ monitoring: { enabled: true, port: 0 } })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const wrong = String((Number(h.code('alice')) + 1) % 1_000_000).padStart(6, '0')
  for (let i = 0; i < 10; i++) {
    const from = { localAddress: `127.0.0.${10 + i}` } as IClientOptions
    // A wrong code, a malformed code without a password, and nothing after the bar.
    t.equal(await h.refused({ username: `alice|${wrong}`, password: 'guess', ...from }), 0x86)
    t.equal(await h.refused({ username: 'alice|x', ...from }), 0x86)
    t.equal(await h.refused({ username: 'alice|', password: 'guess', protocolVersion: 4, ...from }), 4)
  }
  const alice = await h.connect('alice')
  t.equal(alice.connected, true, 'the device with both factors logs in')
  await alice.endAsync()
  t.same(events(h, 'auth.lockout').filter((e) => e.scope === 'user'), [], 'the account was never locked for everyone')
  t.match(await metricsText(h), /bastion_logins_total\{result="failed",reason="bad_otp"\} 10/)
})
