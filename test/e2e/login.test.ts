// Logins over real TLS with mqtt.js, MQTT 5 and 3.1.1: every refusal reason has its CONNACK code.
import t from 'tap'
import { events, PASSWORD, startHarness } from '../helpers/harness.js'

// This file asks for every refusal reason many times over from one address and for few users:
// the lockout (tested in lockout.test.ts) would soon answer all of them with locked_out.
const h = await startHarness({ auth: { lockout: { maxFailuresPerUser: 0, maxFailuresPerIp: 0 } } })
t.teardown(() => h.close())

// A hash made by Python's bcrypt.hashpw(b'correct horse battery', bcrypt.gensalt()) (cost 12, $2b$).
const PYTHON_HASH = '$2b$12$CAi96KlkEBVfN.iXyoyAp.fp97w1t0sIjPQ/EHTGMxNtkUyor7a0S'

t.test('an MQTT 5 client logs in with user|code and the base password', async (t) => {
  await h.addUser('alice')
  const c = await h.connect('alice')
  t.equal(c.connected, true)
  const ok = events(h, 'login.ok').find((e) => e.user === 'alice')
  t.ok(ok, 'login.ok logged')
  t.equal(ok?.protocol, 5)
  await c.endAsync()
})

t.test('an MQTT 3.1.1 client logs in the same way', async (t) => {
  await h.addUser('bob311')
  const c = await h.connect('bob311', { protocolVersion: 4 })
  t.equal(c.connected, true)
  await c.endAsync()
})

t.test('a user whose hash was made by Python bcrypt logs in', async (t) => {
  await h.addUser('pyuser', { hash: PYTHON_HASH })
  const c = await h.connect('pyuser')
  t.equal(c.connected, true)
  await c.endAsync()
})

t.test('a $2y$ hash of the same password logs in', async (t) => {
  await h.addUser('phpuser', { hash: '$2y$' + PYTHON_HASH.slice(4) })
  const c = await h.connect('phpuser')
  t.equal(c.connected, true)
  await c.endAsync()
})

t.test('refusals carry CONNACK 0x86 (v5) and return code 4 (3.1.1)', async (t) => {
  await h.addUser('carol')
  await h.addUser('dave', { enabled: false })
  const code = h.code('carol')
  const cases: Array<[string, string | undefined, string | undefined, string]> = [
    ['no | in the username', 'carol', PASSWORD, 'malformed_username'],
    ['empty user', `|${code}`, PASSWORD, 'malformed_username'],
    ['empty code', 'carol|', PASSWORD, 'malformed_username'],
    ['non-numeric code', 'carol|12ab56', PASSWORD, 'malformed_username'],
    ['unknown user', `nobody|${code}`, PASSWORD, 'unknown_user'],
    ['disabled user', `dave|${h.code('dave')}`, PASSWORD, 'disabled_user'],
    ['wrong password', `carol|${code}`, 'wrong password!', 'bad_password'],
    ['wrong code', `carol|${code === '000000' ? '111111' : '000000'}`, PASSWORD, 'bad_otp'],
    ['expired code (3 steps old)', `carol|${h.code('carol', -3)}`, PASSWORD, 'bad_otp'],
    ['user with a slash', `car/ol|${code}`, PASSWORD, 'invalid_username'],
    ['user with a wildcard', `c#|${code}`, PASSWORD, 'invalid_username'],
    ['user with a $', `$SYS|${code}`, PASSWORD, 'invalid_username'],
    ['user with NUL', `car\u0000ol|${code}`, PASSWORD, 'invalid_username'],
    ['user of 65 characters', `${'a'.repeat(65)}|${code}`, PASSWORD, 'invalid_username'],
    ['no password', `carol|${code}`, undefined, 'missing_password']
  ]
  for (const [name, username, password, reason] of cases) {
    for (const protocolVersion of [5, 4] as const) {
      const before = events(h, 'login.failed').length
      const rc = await h.refused({ username, ...(password === undefined ? {} : { password }), protocolVersion })
      t.equal(rc, protocolVersion === 5 ? 0x86 : 4, `${name} (v${protocolVersion})`)
      const logged = events(h, 'login.failed').slice(before)
      t.equal(logged[0]?.reason, reason, `${name} logged as ${reason}`)
    }
  }
})

t.test('anonymous connections are refused with 0x87 / 5', async (t) => {
  t.equal(await h.refused({ protocolVersion: 5 }), 0x87)
  t.equal(await h.refused({ protocolVersion: 4 }), 5)
})

t.test('a code accepted once is refused when replayed (RFC 6238 §5.2)', async (t) => {
  await h.addUser('erin')
  const username = `erin|${h.code('erin')}`
  const c = await h.connect('erin', { username })
  await c.endAsync()
  t.equal(await h.refused({ username, password: PASSWORD }), 0x86)
  t.equal(events(h, 'login.failed').at(-1)?.reason, 'replayed_otp')
  // An older code (previous step, still inside the window) is refused as well.
  t.equal(await h.refused({ username: `erin|${h.code('erin', -1)}`, password: PASSWORD }), 0x86)
  // A later step is fine.
  const next = await h.connect('erin', { offset: 1 })
  t.equal(next.connected, true)
  await next.endAsync()
})

t.test('logs never carry the password, the code or the raw username', async (t) => {
  const text = JSON.stringify(h.logs)
  t.notMatch(text, PASSWORD)
  t.notMatch(text, /\w\|\d{6}/, 'no user|code pair in the log')
})
