// The credential cache inside the store login: when a verified password may skip bcrypt.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import { createCredentialCache } from '../../src/auth/credential-cache.js'
import { login } from '../../src/auth/login.js'
import { createPasswordPool, type PasswordPool } from '../../src/crypto/password-pool.js'
import { codeForStep, newSecret, stepAt } from '../../src/crypto/totp.js'
import { createFileStore } from '../../src/stores/file.js'
import type { UserRecord } from '../../src/stores/store.js'

const real = createPasswordPool(1)
t.teardown(() => real.close())
let bcrypts = 0
const passwords: PasswordPool = { ...real, verify: async (p, h) => { bcrypts++; return await real.verify(p, h) } }
const dir = mkdtempSync(join(tmpdir(), 'bastion-cache-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

/** A fresh store with alice, a cache whose clock the test moves, and a login at any step. */
async function setup (ttl = 60, maxEntries = 10) {
  const store = createFileStore(join(mkdtempSync(join(dir, 's-')), 'users.json'))
  const secret = newSecret()
  await store.add({ username: 'alice', passwordHash: bcrypt.hashSync('pass-word-1', 4), totpSecret: secret, enabled: true, createdAt: '' })
  let clock = Date.now()
  const cache = createCredentialCache({ ttl, maxEntries, now: () => clock })
  // A wide window gives each login of a test a fresh, unclaimed step, like a device every 30 s.
  let step = stepAt() - 10
  const deps = { store, passwords, cache, totp: { window: 10, replayProtection: true, required: true } }
  const attempt = async (password = 'pass-word-1', user = 'alice', s = secret) => await login(deps, `${user}|${codeForStep(s, step++)}`, Buffer.from(password))
  return { store, cache, attempt, advance: (ms: number) => { clock += ms }, secret }
}

t.test('a second login with the same password and a fresh code skips bcrypt', async (t) => {
  const { attempt, cache } = await setup()
  bcrypts = 0
  t.match(await attempt(), { ok: true, user: 'alice' })
  t.equal(bcrypts, 1)
  t.match(await attempt(), { ok: true, user: 'alice' })
  t.equal(bcrypts, 1, 'served by the cache')
  t.equal(cache.size, 1)
})

t.test('a different password misses the cache and is checked by bcrypt', async (t) => {
  const { attempt } = await setup()
  await attempt()
  bcrypts = 0
  t.match(await attempt('pass-word-2'), { ok: false, reason: 'bad_password' })
  t.equal(bcrypts, 1)
})

t.test('the code is still checked and claimed on a cached login', async (t) => {
  const { store, secret, cache } = await setup()
  const deps = { store, passwords, cache, totp: { window: 1, replayProtection: true, required: true } }
  const code = codeForStep(secret, stepAt() - 1)
  t.match(await login(deps, `alice|${code}`, Buffer.from('pass-word-1')), { ok: true })
  bcrypts = 0
  t.match(await login(deps, `alice|${code}`, Buffer.from('pass-word-1')), { ok: false, reason: 'replayed_otp' })
  t.match(await login(deps, 'alice|000000', Buffer.from('pass-word-1')), { ok: false })
  t.equal(bcrypts, 0)
  t.equal((await store.find('alice'))?.lastStep, stepAt() - 1, 'the step was claimed')
})

t.test('a changed password hash, TOTP secret or enabled flag is a miss', async (t) => {
  const { attempt, store } = await setup()
  await attempt()
  await store.update('alice', { passwordHash: bcrypt.hashSync('pass-word-1', 4) })
  bcrypts = 0
  t.match(await attempt(), { ok: true })
  t.equal(bcrypts, 1, 'same password, new hash: bcrypt again')
  await store.update('alice', { enabled: false })
  bcrypts = 0
  t.match(await attempt(), { ok: false, reason: 'disabled_user' })
  t.equal(bcrypts, 1, 'a disabled account is never served from the cache')
  await store.update('alice', { enabled: true })
  await attempt()
  const fresh = newSecret()
  await store.update('alice', { totpSecret: fresh })
  bcrypts = 0
  t.match(await attempt('pass-word-1', 'alice', fresh), { ok: true })
  t.equal(bcrypts, 1, 'new secret: bcrypt again')
})

t.test('an entry expires after the TTL, and forget() drops it at once', async (t) => {
  const { attempt, advance, cache } = await setup(60)
  await attempt()
  advance(61_000)
  bcrypts = 0
  await attempt()
  t.equal(bcrypts, 1, 'expired')
  cache.forget('ALICE')
  bcrypts = 0
  await attempt()
  t.equal(bcrypts, 1, 'forgotten (case does not matter)')
})

t.test('ttl 0 turns the cache off', async (t) => {
  const { attempt, cache } = await setup(0)
  await attempt()
  bcrypts = 0
  await attempt()
  t.equal(bcrypts, 1)
  t.equal(cache.size, 0)
})

t.test('the cache holds at most maxEntries accounts, forgetting the least recently used', async (t) => {
  const cache = createCredentialCache({ ttl: 60, maxEntries: 2 })
  const rec = (u: string): UserRecord => ({ username: u, passwordHash: `$2b$04$${u}`, totpSecret: 'A'.repeat(32), enabled: true, createdAt: '' })
  const pw = Buffer.from('pw')
  cache.remember(rec('a'), pw)
  cache.remember(rec('b'), pw)
  t.ok(cache.hit(rec('a'), pw), 'a used: b is now the oldest')
  cache.remember(rec('c'), pw)
  t.equal(cache.size, 2)
  t.ok(cache.hit(rec('a'), pw))
  t.notOk(cache.hit(rec('b'), pw), 'b evicted')
  t.ok(cache.hit(rec('c'), pw))
})

