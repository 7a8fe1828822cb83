import t from 'tap'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import { login, parseUsername, screen } from '../../src/auth/login.js'
import { createPasswordPool, type PasswordPool } from '../../src/crypto/password-pool.js'
import { currentCode, newSecret } from '../../src/crypto/totp.js'
import { BastionError } from '../../src/errors.js'
import { createFileStore } from '../../src/stores/file.js'
import type { UserStore } from '../../src/stores/store.js'
import { scratch } from '../helpers/scratch.js'

const scratchDir = scratch('bastion-login-')

const real = createPasswordPool(1)
t.teardown(() => real.close())
const hashes: string[] = []
// Records which hash each check ran against, so the test can see the dummy hash being used.
const passwords: PasswordPool = { verify: async (p, h) => { hashes.push(h); return await real.verify(p, h) }, hash: real.hash, close: async () => {} }
const store = createFileStore(join(scratchDir(), 'users.json'))
const secret = newSecret()
await store.add({ username: 'alice', passwordHash: bcrypt.hashSync('pass-word-1', 4), totpSecret: secret, enabled: true, createdAt: '' })
// bob's and dora's codes are used up by the ordering tests; alice's by the rest.
await store.add({ username: 'bob', passwordHash: bcrypt.hashSync('pass-word-1', 4), totpSecret: secret, enabled: true, createdAt: '' })
await store.add({ username: 'dora', passwordHash: bcrypt.hashSync('pass-word-1', 4), totpSecret: secret, enabled: true, createdAt: '' })
const deps = { store, passwords, totp: { window: 1, replayProtection: true, required: true } }
const pw = Buffer.from('pass-word-1')

t.test('the code is what follows the last |', async (t) => {
  t.same(parseUsername('alice|123456'), { user: 'alice', code: '123456' })
  t.same(parseUsername('a|b|123456'), { user: 'a|b', code: '123456' })
  t.equal(parseUsername('alice'), undefined)
})

t.test('a wrong code, an unknown user or a replayed code never reaches the password pool', async (t) => {
  hashes.length = 0
  const wrong = String((Number(currentCode(secret)) + 1) % 1_000_000).padStart(6, '0')
  t.match(await login(deps, `bob|${wrong}`, pw), { ok: false, reason: 'bad_otp', user: 'bob' })
  t.match(await login(deps, `mallory|${currentCode(secret)}`, pw), { ok: false, reason: 'unknown_user', user: 'mallory' })
  t.match(await login(deps, 'bob|12345x', pw), { ok: false, reason: 'malformed_username' })
  // The next step's code: valid for 30 s or more, so the replay below cannot fall out of the window.
  const used = currentCode(secret, Date.now() + 30_000)
  t.match(await login(deps, `bob|${used}`, pw), { ok: true })
  t.equal(hashes.length, 1, 'only the valid login ran bcrypt')
  t.match(await login(deps, `bob|${used}`, Buffer.from('any-guess-at-all')), { ok: false, reason: 'replayed_otp' })
  t.equal(hashes.length, 1, 'a claimed code is refused before the password is looked at')
})

t.test('the cheap phase settles wrong codes; a valid code leaves a password check with the code\'s deadline', async (t) => {
  const wrong = await screen(deps, 'dora|000000', pw)
  t.ok('result' in wrong && !wrong.result.ok)
  const now = Date.now()
  const s = await screen(deps, `dora|${currentCode(secret, now + 30_000)}`, pw)
  if (!('verify' in s)) return t.fail('a valid code must leave the password check')
  // The code of the next step stays valid through the step after it (window 1).
  t.equal(s.deadline, (Math.floor(now / 30_000) + 3) * 30_000)
  t.match(await s.verify(), { ok: true, delta: 1 })
})

t.test('a wrong password never reveals or burns the code', async (t) => {
  const code = currentCode(secret)
  t.match(await login(deps, `alice|${code}`, Buffer.from('nope-nope')), { ok: false, reason: 'bad_password' })
  t.match(await login(deps, `alice|${code}`, pw), { ok: true, user: 'alice', delta: 0 })
})

t.test('a code at the edge of the window is accepted and reports its drift', async (t) => {
  const r = await login(deps, `alice|${currentCode(secret, Date.now() + 30_000)}`, pw)
  t.match(r, { ok: true, delta: 1 })
})

t.test('with window 0 only the current step is accepted', async (t) => {
  const r = await login({ ...deps, totp: { window: 0, replayProtection: false, required: true } }, `alice|${currentCode(secret, Date.now() - 30_000)}`, pw)
  t.match(r, { ok: false, reason: 'bad_otp' })
})

t.test('with replay protection off a code can be used again', async (t) => {
  const d = { ...deps, totp: { window: 1, replayProtection: false, required: true } }
  const u = `alice|${currentCode(secret)}`
  t.match(await login(d, u, pw), { ok: true })
  t.match(await login(d, u, pw), { ok: true })
})

t.test('a store fault is thrown, never turned into a refusal or an acceptance', async (t) => {
  const broken: UserStore = { ...store, find: async () => { throw new BastionError('BASTION_ERR_BACKEND_UNAVAILABLE', 'db down') } }
  await t.rejects(login({ ...deps, store: broken }, `alice|${currentCode(secret)}`, pw), { code: 'BASTION_ERR_BACKEND_UNAVAILABLE' })
})
