// Logins at fleet scale, over real TLS against the embedded SQLite store: the code is checked
// before the password (a wrong code never reaches bcrypt, from any address), and a verified
// password is remembered (a later login with a fresh code skips bcrypt) until the account's
// credentials change. The store itself under concurrent writers: store-sqlite.test.ts.
import t from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { events, PASSWORD, startHarness, type Harness } from '../helpers/harness.js'

const run = promisify(execFile)
const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')

async function metric (h: Harness, name: string, labels: string): Promise<number> {
  const m = h.bastion.monitoring
  if (m === undefined) throw new Error('monitoring is off')
  const body = await (await fetch(`http://${m.host}:${m.port}/metrics`, { signal: AbortSignal.timeout(5000) })).text()
  const line = body.split('\n').find((l) => l.startsWith(`${name}{${labels}}`))
  if (line === undefined) throw new Error(`no sample ${name}{${labels}}`)
  return Number(line.split(' ').pop())
}
const hashChecks = async (h: Harness): Promise<number> => await metric(h, 'bastion_password_checks_total', 'by="hash"')
const cacheChecks = async (h: Harness): Promise<number> => await metric(h, 'bastion_password_checks_total', 'by="cache"')

/** A code for `name` that is not the valid one (the valid one plus one, mod 10^6). */
function wrongCode (h: Harness, name: string): string {
  return String((Number(h.code(name)) + 1) % 1_000_000).padStart(6, '0')
}

const base = { monitoring: { enabled: true, port: 0 }, auth: { lockout: { maxFailuresPerIp: 0, maxFailuresPerUser: 0 } } }

t.test('wrong codes from many addresses, for real and unknown accounts, never reach bcrypt', async (t) => {
  const h = await startHarness(base)
  t.teardown(() => h.close())
  await h.addUser('alice')
  const attempts: Array<Promise<number>> = []
  for (let i = 0; i < 40; i++) {
    const username = i % 2 === 0 ? `alice|${wrongCode(h, 'alice')}` : `nobody${i}|123456`
    attempts.push(h.refused({ username, password: PASSWORD, clientId: `bogus-${i}`, localAddress: `127.0.0.${2 + (i % 20)}` }))
  }
  // The real device logs in while the guesses are in flight: none of them burns its code.
  const c = await h.connect('alice')
  t.ok(c.connected, 'the device logs in during the flood')
  const codes = await Promise.all(attempts)
  t.same(new Set(codes), new Set([0x86]), 'one answer for a wrong code and for an unknown account')
  t.equal(await hashChecks(h), 1, 'one password was checked: the device\'s')
  const reasons = new Set(events(h, 'login.failed').map((e) => e.reason))
  t.same(reasons, new Set(['bad_otp', 'unknown_user']), 'the log tells them apart')
})

t.test('a valid code with a wrong password costs one bcrypt and leaves the code usable', async (t) => {
  const h = await startHarness(base)
  t.teardown(() => h.close())
  await h.addUser('bob')
  t.equal(await h.refused({ username: `bob|${h.code('bob')}`, password: 'not the password', clientId: 'bob-guess' }), 0x86)
  t.equal(await hashChecks(h), 1)
  t.match(events(h, 'login.failed').at(-1), { reason: 'bad_password' })
  const c = await h.connect('bob')
  t.ok(c.connected, 'the same code still logs the device in')
})

t.test('a device logging in again with a fresh code is served by the credential cache', async (t) => {
  const h = await startHarness(base)
  t.teardown(() => h.close())
  await h.addUser('carol')
  await h.freshStep()
  await (await h.connect('carol', { clientId: 'carol-1', offset: -1 })).endAsync()
  await (await h.connect('carol', { clientId: 'carol-2', offset: 0 })).endAsync()
  await (await h.connect('carol', { clientId: 'carol-3', offset: 1 })).endAsync()
  t.equal(await hashChecks(h), 1, 'one bcrypt')
  t.equal(await cacheChecks(h), 2, 'then the cache')
  // The code is still claimed on every login: a replay is refused even with the right password.
  t.equal(await h.refused({ username: `carol|${h.code('carol', 1)}`, password: PASSWORD, clientId: 'carol-4' }), 0x86)
  t.match(events(h, 'login.failed').at(-1), { reason: 'replayed_otp' })
})

t.test('a new password, a disabled account or a cache TTL of 0 each mean bcrypt again', async (t) => {
  const h = await startHarness(base)
  t.teardown(() => h.close())
  await h.addUser('dave')
  await h.freshStep()
  await (await h.connect('dave', { clientId: 'd-1', offset: -1 })).endAsync()
  // The CLI changes the password in the store the broker is serving from.
  const cfg = join(h.dir, 'bastion.yaml')
  writeFileSync(cfg, 'auth:\n  store: { type: sqlite, path: data/users.db }\n')
  await run(process.execPath, [CLI, 'user', 'passwd', 'dave', '--password', 'a brand new password', '--config', cfg])
  t.equal(await h.refused({ username: `dave|${h.code('dave', 0)}`, password: PASSWORD, clientId: 'd-2' }), 0x86, 'the old password no longer works, cached or not')
  t.equal(await hashChecks(h), 2)
  await run(process.execPath, [CLI, 'user', 'disable', 'dave', '--config', cfg])
  t.equal(await h.refused({ username: `dave|${h.code('dave', 0)}`, password: 'a brand new password', clientId: 'd-3' }), 0x86)
  t.match(events(h, 'login.failed').at(-1), { reason: 'disabled_user' })

  const off = await startHarness({ ...base, auth: { ...base.auth, credentialCache: { ttl: 0 } } })
  t.teardown(() => off.close())
  await off.addUser('erin')
  await off.freshStep()
  await (await off.connect('erin', { clientId: 'e-1', offset: -1 })).endAsync()
  await (await off.connect('erin', { clientId: 'e-2', offset: 0 })).endAsync()
  t.equal(await hashChecks(off), 2)
  t.equal(await cacheChecks(off), 0)
})
