// The lockout against a scripted authenticator and a hand-moved clock.
import t from 'tap'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import type { Authenticator, LoginRequest } from '../../src/auth/authenticator.js'
import { createLockout, ipKey, type LockoutOptions } from '../../src/auth/lockout.js'
import { BastionError } from '../../src/errors.js'

const PW = 'right'

function setup (cfg: Partial<LockoutOptions> = {}): {
  auth: Authenticator
  calls: () => number
  clock: { now: number }
  logs: Array<Record<string, any>>
  scopes: string[]
  lockout: ReturnType<typeof createLockout>
  fault: { on: boolean }
} {
  const logs: Array<Record<string, any>> = []
  const log = pino({ level: 'debug' }, new Writable({ write (c: Buffer, _e, cb) { logs.push(JSON.parse(c.toString())); cb() } }))
  const clock = { now: 1_000_000 }
  const scopes: string[] = []
  const fault = { on: false }
  let calls = 0
  // alice exists; everyone else is unknown. Answers like the store authenticator.
  const inner: Authenticator = {
    name: 'scripted',
    async login (req) {
      calls++
      if (fault.on) throw new BastionError('BASTION_ERR_BACKEND_UNAVAILABLE', 'store down')
      const user = (req.username ?? '').split('|')[0] as string
      if (user !== 'alice') return { ok: false, reason: 'unknown_user', user }
      return req.password?.toString() === PW ? { ok: true, user } : { ok: false, reason: 'bad_password', user }
    }
  }
  const lockout = createLockout({
    window: 60, maxFailuresPerUser: 3, maxFailuresPerIp: 0, duration: 10, maxDuration: 40,
    splitCode: true, log, now: () => clock.now, onLockout: (s) => scopes.push(s), ...cfg
  })
  t.teardown(() => lockout.close())
  return { auth: lockout.wrap(inner), calls: () => calls, clock, logs, scopes, lockout, fault }
}

const req = (user: string, password: string, remote = '192.0.2.1'): LoginRequest =>
  ({ username: `${user}|123456`, password: Buffer.from(password), clientId: 'c', remoteAddress: remote })
const events = (logs: Array<Record<string, any>>, name: string): Array<Record<string, any>> => logs.filter((l) => l.event === name)

t.test('past the threshold the right password is refused without being checked', async (t) => {
  const s = setup()
  for (let i = 0; i < 3; i++) t.match(await s.auth.login(req('alice', 'wrong')), { ok: false, reason: 'bad_password' })
  const before = s.calls()
  t.same(await s.auth.login(req('alice', PW)), { ok: false, reason: 'locked_out', user: 'alice' })
  t.equal(s.calls(), before, 'the inner authenticator was not asked')
  t.same(s.scopes, ['user'])
  const [lock] = events(s.logs, 'auth.lockout')
  t.match(lock, { level: 40, scope: 'user', user: 'alice', remote: '192.0.2.1', failures: 3, seconds: 10, until: new Date(s.clock.now + 10_000).toISOString() })
  s.clock.now += 10_000
  t.same(await s.auth.login(req('alice', PW)), { ok: true, user: 'alice' }, 'works again once the lockout is over')
})

t.test('an unknown account is locked out the same way and gets the same answer', async (t) => {
  const s = setup()
  for (let i = 0; i < 3; i++) await s.auth.login(req('alice', 'wrong'))
  for (let i = 0; i < 3; i++) t.match(await s.auth.login(req('nobody', 'wrong')), { reason: 'unknown_user' })
  const known = await s.auth.login(req('alice', 'wrong'))
  const unknown = await s.auth.login(req('nobody', 'wrong'))
  t.same(known, { ok: false, reason: 'locked_out', user: 'alice' })
  t.same(unknown, { ok: false, reason: 'locked_out', user: 'nobody' })
  t.same(events(s.logs, 'auth.lockout').map((l) => [l.user, l.failures, l.seconds]), [['alice', 3, 10], ['nobody', 3, 10]])
})

t.test('failures older than the window do not count', async (t) => {
  const s = setup()
  await s.auth.login(req('alice', 'wrong'))
  await s.auth.login(req('alice', 'wrong'))
  s.clock.now += 60_001
  await s.auth.login(req('alice', 'wrong'))
  await s.auth.login(req('alice', 'wrong'))
  t.same(await s.auth.login(req('alice', PW)), { ok: true, user: 'alice' }, 'only two failures inside the window')
})

t.test('each further lockout doubles up to maxDuration, and a quiet key starts over', async (t) => {
  const s = setup()
  const seconds: number[] = []
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 3; i++) await s.auth.login(req('alice', 'wrong'))
    const last = events(s.logs, 'auth.lockout').at(-1)
    seconds.push(last?.seconds)
    t.match(await s.auth.login(req('alice', 'wrong')), { reason: 'locked_out' })
    s.clock.now += last?.seconds * 1000
  }
  t.same(seconds, [10, 20, 40, 40, 40])
  s.clock.now += 40_000 // maxDuration without a lockout
  for (let i = 0; i < 3; i++) await s.auth.login(req('alice', 'wrong'))
  t.equal(events(s.logs, 'auth.lockout').at(-1)?.seconds, 10)
})

t.test('the start and the end of a lockout are logged once each, even if nobody tries again', async (t) => {
  const s = setup()
  for (let i = 0; i < 3; i++) await s.auth.login(req('alice', 'wrong'))
  for (let i = 0; i < 5; i++) await s.auth.login(req('alice', PW))
  t.equal(events(s.logs, 'auth.lockout').length, 1)
  s.lockout.sweep()
  t.equal(events(s.logs, 'auth.lockout_ended').length, 0, 'not over yet')
  s.clock.now += 10_000
  s.lockout.sweep()
  s.lockout.sweep()
  await s.auth.login(req('alice', PW))
  const ended = events(s.logs, 'auth.lockout_ended')
  t.equal(ended.length, 1)
  t.match(ended[0], { level: 30, scope: 'user', user: 'alice' })
})

t.test('the end is also logged when the next attempt comes before the timer', async (t) => {
  const s = setup()
  for (let i = 0; i < 3; i++) await s.auth.login(req('alice', 'wrong'))
  s.clock.now += 10_000
  await s.auth.login(req('alice', 'wrong'))
  s.lockout.sweep()
  t.equal(events(s.logs, 'auth.lockout_ended').length, 1)
})

t.test('the end is logged by the timer on a real clock', async (t) => {
  const s = setup({ now: Date.now, duration: 1, maxDuration: 1 })
  for (let i = 0; i < 3; i++) await s.auth.login(req('alice', 'wrong'))
  for (let i = 0; i < 50 && events(s.logs, 'auth.lockout_ended').length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(events(s.logs, 'auth.lockout_ended').length, 1)
})

t.test('a successful login clears the account\'s failures', async (t) => {
  const s = setup()
  await s.auth.login(req('alice', 'wrong'))
  await s.auth.login(req('alice', 'wrong'))
  t.match(await s.auth.login(req('alice', PW)), { ok: true })
  await s.auth.login(req('alice', 'wrong'))
  await s.auth.login(req('alice', 'wrong'))
  t.match(await s.auth.login(req('alice', PW)), { ok: true }, 'four failures, never three in a row')
  t.equal(events(s.logs, 'auth.lockout').length, 0)
})

t.test('per account: a lockout holds from every address', async (t) => {
  const s = setup()
  for (let i = 0; i < 3; i++) await s.auth.login(req('alice', 'wrong', '203.0.113.66'))
  t.match(await s.auth.login(req('alice', PW, '198.51.100.7')), { reason: 'locked_out' })
})

t.test('per account: below the threshold the owner logs in from elsewhere while an attacker guesses', async (t) => {
  const s = setup({ maxFailuresPerIp: 2 })
  await s.auth.login(req('alice', 'wrong', '203.0.113.66'))
  await s.auth.login(req('alice', 'wrong', '203.0.113.66'))
  t.match(await s.auth.login(req('alice', 'wrong', '203.0.113.66')), { reason: 'locked_out' }, 'the attacker\'s address is locked')
  t.match(await s.auth.login(req('alice', PW, '198.51.100.7')), { ok: true }, 'the owner is not')
})

t.test('per address: failures for many accounts lock the address for every account', async (t) => {
  const s = setup({ maxFailuresPerUser: 0, maxFailuresPerIp: 3 })
  for (const u of ['u1', 'u2', 'u3']) await s.auth.login(req(u, 'wrong', '203.0.113.66'))
  t.same(s.scopes, ['ip'])
  t.match(events(s.logs, 'auth.lockout')[0], { scope: 'ip', remote: '203.0.113.66', failures: 3 })
  t.match(await s.auth.login(req('alice', PW, '203.0.113.66')), { reason: 'locked_out' })
  t.match(await s.auth.login(req('alice', PW, '198.51.100.7')), { ok: true }, 'another address is not locked')
  s.clock.now += 10_000
  s.lockout.sweep()
  t.match(events(s.logs, 'auth.lockout_ended')[0], { scope: 'ip', remote: '203.0.113.66' })
})

t.test('IPv6 addresses count per /64', async (t) => {
  t.equal(ipKey('2001:db8:1:2::1'), '2001:db8:1:2::/64')
  t.equal(ipKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64')
  t.equal(ipKey('::1'), '0:0:0:0::/64')
  t.equal(ipKey('fe80::1%eth0'), 'fe80:0:0:0::/64')
  t.equal(ipKey('::ffff:192.0.2.1'), '192.0.2.1')
  t.equal(ipKey('192.0.2.1'), '192.0.2.1')
  const s = setup({ maxFailuresPerUser: 0, maxFailuresPerIp: 3 })
  for (const host of ['1', '2', '3']) await s.auth.login(req('u', 'wrong', `2001:db8:1:2::${host}`))
  t.match(await s.auth.login(req('alice', PW, '2001:db8:1:2::99')), { reason: 'locked_out' })
  t.match(await s.auth.login(req('alice', PW, '2001:db8:1:3::1')), { ok: true })
})

t.test('account names are compared without case', async (t) => {
  const s = setup()
  for (const u of ['alice', 'Alice', 'ALICE']) await s.auth.login(req(u, 'wrong'))
  t.match(await s.auth.login(req('aLiCe', 'wrong')), { reason: 'locked_out' })
})

t.test('faults and refusals that are not guesses do not count', async (t) => {
  const s = setup()
  s.fault.on = true
  for (let i = 0; i < 5; i++) await t.rejects(s.auth.login(req('alice', PW)))
  s.fault.on = false
  t.match(await s.auth.login(req('alice', PW)), { ok: true })
  t.equal(events(s.logs, 'auth.lockout').length, 0)
})

t.test('thresholds of 0 turn the lockout off', async (t) => {
  const s = setup({ maxFailuresPerUser: 0, maxFailuresPerIp: 0 })
  for (let i = 0; i < 20; i++) await s.auth.login(req('alice', 'wrong'))
  t.match(await s.auth.login(req('alice', PW)), { ok: true })
})

t.test('without splitCode the whole username is the account', async (t) => {
  const s = setup({ splitCode: false })
  for (let i = 0; i < 3; i++) await s.auth.login({ ...req('alice', 'wrong'), username: 'alice' })
  t.match(await s.auth.login({ ...req('alice', 'wrong'), username: 'alice' }), { reason: 'locked_out', user: 'alice' })
  // `alice|123456` is not a valid account name here: counted per address only, never a key.
  t.match(await s.auth.login(req('alice', PW)), { ok: true })
})

t.test('recheck refuses a locked-out attempt and counts nothing', async (t) => {
  const s = setup()
  let calls = 0
  const inner: Authenticator = { name: 'x', login: async () => { calls++; return { ok: false, reason: 'bad_password', user: 'bob' } } }
  const checked = s.lockout.recheck(inner)
  for (let i = 0; i < 5; i++) await checked.login(req('bob', 'wrong'))
  t.equal(calls, 5)
  t.equal(events(s.logs, 'auth.lockout').length, 0, 'recheck records no failures')
  for (let i = 0; i < 3; i++) await s.auth.login(req('alice', 'wrong'))
  t.same(await checked.login(req('alice', PW)), { ok: false, reason: 'locked_out', user: 'alice' })
  t.equal(calls, 5)
})

t.test('memory is bounded: keys past maxKeys are forgotten oldest first, failures per key up to the threshold', async (t) => {
  const s = setup({ maxKeys: 100, maxFailuresPerIp: 250 })
  for (let i = 0; i < 3; i++) await s.auth.login(req('u0', 'wrong', `192.0.2.${i}`))
  t.match(await s.auth.login(req('u0', 'wrong')), { reason: 'locked_out' }, 'u0 locked')
  for (let i = 1; i <= 100; i++) await s.auth.login(req(`u${i}`, 'wrong'))
  t.match(await s.auth.login(req('u0', 'wrong')), { reason: 'unknown_user' }, 'u0 forgotten: 101 accounts failed since')
  const ended = events(s.logs, 'auth.lockout_ended')
  t.match(ended, [{ user: 'u0', evicted: true }], 'a forgotten lockout is logged as ended')
  // 300 failures from one address, threshold 250, but never 250 inside one window.
  for (let i = 0; i < 200; i++) await s.auth.login(req('x', 'wrong', '198.51.100.9'))
  s.clock.now += 61_000
  for (let i = 0; i < 100; i++) await s.auth.login(req('x', 'wrong', '198.51.100.9'))
  t.equal(events(s.logs, 'auth.lockout').filter((l) => l.scope === 'ip').length, 0)
})

t.test('an over-long or invalid account name is never a key but still counts per address', async (t) => {
  const s = setup({ maxFailuresPerIp: 3 })
  for (let i = 0; i < 3; i++) await s.auth.login(req('x'.repeat(10_000), 'wrong'))
  t.same(await s.auth.login(req('y'.repeat(10_000), 'wrong')), { ok: false, reason: 'locked_out' })
  t.same(events(s.logs, 'auth.lockout').map((l) => l.scope), ['ip'])
})

/** Like setup's authenticator, with the code checked first: code 000000 is wrong, others valid. */
function codeFirst (cfg: Partial<LockoutOptions> = {}) {
  const s = setup({ codeFirst: true, ...cfg })
  let calls = 0
  const inner: Authenticator = {
    name: 'code-first',
    async login (r) {
      calls++
      const [user = '', code] = (r.username ?? '').split('|')
      if (user !== 'alice') return { ok: false, reason: 'unknown_user', user }
      if (code === '000000') return { ok: false, reason: 'bad_otp', user }
      return r.password?.toString() === PW ? { ok: true, user } : { ok: false, reason: 'bad_password', user }
    }
  }
  return { ...s, auth: s.lockout.wrap(inner), calls: () => calls }
}
const guess = (user: string, remote: string): LoginRequest => ({ username: `${user}|000000`, password: Buffer.from('x'), clientId: 'c', remoteAddress: remote })

t.test('code first: wrong codes for an account from many addresses never lock its owner out', async (t) => {
  const s = codeFirst()
  for (let i = 0; i < 30; i++) t.match(await s.auth.login(guess('alice', `203.0.113.${i}`)), { reason: 'bad_otp' })
  t.match(await s.auth.login(req('alice', PW, '198.51.100.7')), { ok: true }, 'the device with both factors logs in')
  t.same(s.scopes, [], 'no lockout at all: each address guessed once')
})

t.test('code first: wrong codes from one address lock the account from that address only', async (t) => {
  const s = codeFirst()
  for (let i = 0; i < 3; i++) await s.auth.login(guess('alice', '203.0.113.66'))
  t.same(s.scopes, ['user_ip'])
  t.match(events(s.logs, 'auth.lockout')[0], { scope: 'user_ip', user: 'alice', remote: '203.0.113.66', failures: 3 })
  const before = s.calls()
  t.same(await s.auth.login(req('alice', PW, '203.0.113.66')), { ok: false, reason: 'locked_out', user: 'alice' }, 'from that address even both factors are refused unchecked')
  t.equal(s.calls(), before)
  t.match(await s.auth.login(req('alice', PW, '198.51.100.7')), { ok: true }, 'from elsewhere the owner logs in')
  t.match(await s.auth.login(guess('bob', '203.0.113.66')), { reason: 'unknown_user' }, 'other accounts from that address are still checked')
})

t.test('code first: a valid code with a wrong password still locks the account everywhere', async (t) => {
  const s = codeFirst()
  for (let i = 0; i < 3; i++) await s.auth.login(req('alice', 'wrong', `203.0.113.${i}`))
  t.same(s.scopes, ['user'])
  t.match(await s.auth.login(req('alice', PW, '198.51.100.7')), { reason: 'locked_out' }, 'the TOTP secret is known: locking the owner too is right')
})

t.test('code first: the per-address count still takes every guess, and addressLocked reports it', async (t) => {
  const s = codeFirst({ maxFailuresPerIp: 4 })
  for (const u of ['u1', 'u2', 'u3', 'u4']) await s.auth.login(guess(u, '203.0.113.66'))
  t.ok(s.lockout.addressLocked('203.0.113.66'))
  t.notOk(s.lockout.addressLocked('203.0.113.67'))
  t.ok(s.scopes.includes('ip'))
  s.clock.now += 10_000
  t.notOk(s.lockout.addressLocked('203.0.113.66'), 'over when the lockout is')
})

t.test('code first: a success from an address clears that address\'s count for the account', async (t) => {
  const s = codeFirst()
  await s.auth.login(guess('alice', '203.0.113.66'))
  await s.auth.login(guess('alice', '203.0.113.66'))
  t.match(await s.auth.login(req('alice', PW, '203.0.113.66')), { ok: true })
  await s.auth.login(guess('alice', '203.0.113.66'))
  await s.auth.login(guess('alice', '203.0.113.66'))
  t.match(await s.auth.login(req('alice', PW, '203.0.113.66')), { ok: true }, 'four typos, never three in a row')
})
