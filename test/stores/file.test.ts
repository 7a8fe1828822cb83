import t from 'tap'
import { chmodSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createFileStore } from '../../src/stores/file.js'
import { assertPrivate } from '../../src/stores/permissions.js'
import { scratch } from '../helpers/scratch.js'

const scratchDir = scratch('bastion-store-')

const record = (username: string) => ({ username, passwordHash: '$2b$04$x', totpSecret: 'A'.repeat(32), enabled: true, createdAt: '2026-01-01T00:00:00.000Z' })

t.test('the store file is created with mode 0600 and written atomically', async (t) => {
  const dir = scratchDir()
  const path = join(dir, 'data', 'users.json')
  const s = createFileStore(path)
  await s.add(record('alice'))
  t.equal(statSync(path).mode & 0o777, 0o600)
  t.same(readdirSync(join(dir, 'data')), ['users.json'], 'no temp file left behind')
  t.equal(JSON.parse(readFileSync(path, 'utf8')).users[0].username, 'alice')
  await t.rejects(s.add(record('alice')), { code: 'BASTION_ERR_USER_EXISTS' })
  await s.update('alice', { enabled: false })
  t.equal((await s.find('alice'))?.enabled, false)
  await t.rejects(s.update('nobody', { enabled: false }), { code: 'BASTION_ERR_USER_UNKNOWN' })
  await s.remove('alice')
  t.equal(await s.find('alice'), undefined)
  await s.close()
})

t.test('a change made by another process is seen without a restart', async (t) => {
  const path = join(scratchDir(), 'users.json')
  const broker = createFileStore(path)
  t.equal(await broker.find('bob'), undefined)
  const cli = createFileStore(path)
  await cli.add(record('bob'))
  t.equal((await broker.find('bob'))?.username, 'bob')
})

t.test('a store readable by group or others is refused with the chmod to run', async (t) => {
  const path = join(scratchDir(), 'users.json')
  writeFileSync(path, JSON.stringify({ version: 1, users: [] }))
  chmodSync(path, 0o644)
  await t.rejects(assertPrivate(path, 'user store'), { code: 'BASTION_ERR_FILE_PERMISSIONS', message: `chmod 600 ${path}` })
  await t.rejects(createFileStore(path).find('x'), { code: 'BASTION_ERR_FILE_PERMISSIONS' })
  chmodSync(path, 0o600)
  t.equal(await createFileStore(path).find('x'), undefined)
})

t.test('a TOTP step is claimed once, also by concurrent logins and after a restart', async (t) => {
  const path = join(scratchDir(), 'users.json')
  const s = createFileStore(path)
  await s.add(record('carol'))
  const results = await Promise.all([s.claimStep('carol', 100), s.claimStep('carol', 100), s.claimStep('carol', 100)])
  t.same(results.filter(Boolean).length, 1, 'exactly one of three concurrent claims wins')
  t.equal(await s.claimStep('carol', 99), false, 'an older step is refused')
  t.equal(await s.claimStep('carol', 101), true)
  const restarted = createFileStore(path)
  t.equal(await restarted.claimStep('carol', 101), false, 'the claim survived a restart')
})

t.test('a file that is not a users file is an error, not an empty store', async (t) => {
  const path = join(scratchDir(), 'users.json')
  writeFileSync(path, '{"hello": 1}', { mode: 0o600 })
  await t.rejects(createFileStore(path).find('x'), { code: 'BASTION_ERR_USER_STORE' })
  writeFileSync(path, 'not json', { mode: 0o600 })
  await t.rejects(createFileStore(path).find('x'), { code: 'BASTION_ERR_USER_STORE' })
})

t.test('addMany adds every user or none', async (t) => {
  const dir = scratchDir()
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const path = join(dir, 'users.json')
  const s = createFileStore(path)
  await s.add(record('carol'))
  await t.rejects(s.addMany([record('a1'), record('carol'), record('a3')]), { code: 'BASTION_ERR_USER_EXISTS', message: 'user carol already exists' })
  await t.rejects(s.addMany([record('b1'), record('b2'), record('b1')]), { code: 'BASTION_ERR_USER_EXISTS', message: 'user b1 appears twice in the batch' })
  t.same((await s.list()).map((u) => u.username), ['carol'], 'nothing of either batch was written')
  await s.addMany([record('Carol'), record('dave')])
  t.same((await createFileStore(path).list()).map((u) => u.username), ['carol', 'Carol', 'dave'], 'names are case-sensitive here')
  await s.close()
})
