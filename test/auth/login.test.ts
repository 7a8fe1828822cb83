import t from 'tap'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import { login, parseUsername } from '../../src/auth/login.js'
import { createPasswordPool, type PasswordPool } from '../../src/crypto/password-pool.js'
import { currentCode, newSecret } from '../../src/crypto/totp.js'
import { BastionError } from '../../src/errors.js'
import { createFileStore } from '../../src/stores/file.js'
import type { UserStore } from '../../src/stores/store.js'

const real = createPasswordPool(1)
t.teardown(() => real.close())
const hashes: string[] = []
// Records which hash each check ran against, so the test can see the dummy hash being used.
const passwords: PasswordPool = { verify: async (p, h) => { hashes.push(h); return await real.verify(p, h) }, hash: real.hash, close: async () => {} }
const store = createFileStore(join(mkdtempSync(join(tmpdir(), 'bastion-login-')), 'users.json'))
const secret = newSecret()
await store.add({ username: 'alice', passwordHash: bcrypt.hashSync('pass-word-1', 4), totpSecret: secret, enabled: true, createdAt: '' })
const deps = { store, passwords, totp: { window: 1, replayProtection: true, required: true } }
const pw = Buffer.from('pass-word-1')

t.test('the code is what follows the last |', async (t) => {
  t.same(parseUsername('alice|123456'), { user: 'alice', code: '123456' })
  t.same(parseUsername('a|b|123456'), { user: 'a|b', code: '123456' })
  t.equal(parseUsername('alice'), undefined)
})

t.test('an unknown user costs a bcrypt check against a dummy hash', async (t) => {
  hashes.length = 0
  const r = await login(deps, `mallory|${currentCode(secret)}`, pw)
  t.match(r, { ok: false, reason: 'unknown_user' })
  t.equal(hashes.length, 1, 'one bcrypt verification ran')
  t.match(hashes[0], /^\$2[aby]\$12\$/, 'against a cost-12 hash like a real account')
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
