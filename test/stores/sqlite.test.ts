import t from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import Database from 'better-sqlite3'
import { createLogger } from '../../src/log.js'
import { createSqliteStore } from '../../src/stores/sqlite.js'
import type { UserRecord } from '../../src/stores/store.js'

const root = mkdtempSync(join(tmpdir(), 'bastion-sqlite-'))
t.teardown(() => { rmSync(root, { recursive: true, force: true }) })
let n = 0
/** A fresh folder per test, inside the one removed at the end. */
function folder (): string {
  const dir = join(root, `t${++n}`)
  mkdirSync(dir, { mode: 0o700 })
  return dir
}

const SECRET = 'A'.repeat(32)
const record = (username: string, extra: Partial<UserRecord> = {}): UserRecord =>
  ({ username, passwordHash: '$2b$04$hash', totpSecret: SECRET, enabled: true, createdAt: '2026-01-01T00:00:00.000Z', ...extra })

/** A logger whose JSON lines land in an array. */
function capture (): { lines: Array<Record<string, unknown>>; log: ReturnType<typeof createLogger> } {
  const lines: Array<Record<string, unknown>> = []
  return { lines, log: createLogger({ level: 'info', destination: { write: (s: string) => { lines.push(JSON.parse(s)) } } }) }
}

/** What is in the database, read behind the store's back. */
function peek (path: string): { users: number; migratedFrom?: string } {
  const db = new Database(path, { readonly: true, fileMustExist: true })
  try {
    const users = (db.prepare('SELECT count(*) AS n FROM users').get() as { n: number }).n
    const meta = db.prepare("SELECT value FROM meta WHERE key = 'migrated_from'").get() as { value: string } | undefined
    return { users, ...(meta === undefined ? {} : { migratedFrom: meta.value }) }
  } finally {
    db.close()
  }
}

t.test('users are added, found, changed and removed, with errors naming the user', async (t) => {
  const s = createSqliteStore({ path: join(folder(), 'users.db') })
  t.teardown(() => s.close())
  await s.add(record('bob'))
  await s.add(record('alice', { lastStep: 7 }))
  await t.rejects(s.add(record('alice')), { code: 'BASTION_ERR_USER_EXISTS', message: 'user alice already exists' })
  t.same(await s.find('alice'), record('alice', { lastStep: 7 }))
  t.equal(await s.find('nobody'), undefined)
  t.same((await s.list()).map((u) => u.username), ['alice', 'bob'], 'listed by name')

  await s.update('alice', { enabled: false })
  t.same(await s.find('alice'), record('alice', { lastStep: 7, enabled: false }), 'only the given field changed')
  await s.update('alice', { passwordHash: '$2b$04$other', totpSecret: 'B'.repeat(32), enabled: true })
  t.same(await s.find('alice'), record('alice', { lastStep: 7, passwordHash: '$2b$04$other', totpSecret: 'B'.repeat(32) }))
  await t.rejects(s.update('nobody', { enabled: false }), { code: 'BASTION_ERR_USER_UNKNOWN', message: 'no such user: nobody' })
  await t.rejects(s.update('nobody', {}), { code: 'BASTION_ERR_USER_UNKNOWN' }, 'an empty patch still names an unknown user')

  await s.remove('alice')
  t.equal(await s.find('alice'), undefined)
  await t.rejects(s.remove('alice'), { code: 'BASTION_ERR_USER_UNKNOWN', message: 'no such user: alice' })
  await s.ping()
})

t.test('a user without a TOTP secret or creation time reads back without them', async (t) => {
  const s = createSqliteStore({ path: join(folder(), 'users.db') })
  t.teardown(() => s.close())
  await s.add({ username: 'plain', passwordHash: '$2b$04$hash', enabled: true, createdAt: '' })
  t.same(await s.find('plain'), { username: 'plain', passwordHash: '$2b$04$hash', enabled: true, createdAt: '' })
})

t.test('names are unique and found regardless of case, and returned as stored', async (t) => {
  const s = createSqliteStore({ path: join(folder(), 'users.db') })
  t.teardown(() => s.close())
  await s.add(record('Alice'))
  await t.rejects(s.add(record('alice')), { code: 'BASTION_ERR_USER_EXISTS', message: 'user alice already exists' })
  t.equal((await s.find('ALICE'))?.username, 'Alice')
  t.equal(await s.claimStep('aLiCe', 5), true)
  t.equal((await s.find('Alice'))?.lastStep, 5)
  await s.remove('alice')
  t.same(await s.list(), [])
})

t.test('a TOTP step is claimed once: an equal or older step is refused, also from another connection', async (t) => {
  const path = join(folder(), 'users.db')
  const broker = createSqliteStore({ path })
  const other = createSqliteStore({ path })
  t.teardown(async () => { await broker.close(); await other.close() })
  await broker.add(record('carol'))
  t.equal(await broker.claimStep('carol', 100), true)
  t.equal(await broker.claimStep('carol', 100), false, 'the same step again')
  t.equal(await broker.claimStep('carol', 99), false, 'an older step')
  const both = await Promise.all([broker.claimStep('carol', 101), other.claimStep('carol', 101)])
  t.equal(both.filter(Boolean).length, 1, 'exactly one of two connections wins the step')
  t.equal(await other.claimStep('carol', 101), false)
  t.equal(await broker.claimStep('nobody', 1), false, 'an unknown user claims nothing')
})

t.test('addMany adds every user or none', async (t) => {
  const s = createSqliteStore({ path: join(folder(), 'users.db') })
  t.teardown(() => s.close())
  await s.add(record('carol'))
  await t.rejects(s.addMany([record('a1'), record('a2'), record('CAROL'), record('a4')]),
    { code: 'BASTION_ERR_USER_EXISTS', message: 'user CAROL already exists' })
  await t.rejects(s.addMany([record('b1'), record('b2'), record('B1')]),
    { code: 'BASTION_ERR_USER_EXISTS', message: 'user B1 appears twice in the batch' })
  t.same((await s.list()).map((u) => u.username), ['carol'], 'nothing of either batch was added')
  await s.addMany([])
  await s.addMany([record('d1', { enabled: false, lastStep: 3 }), record('d2')])
  t.same(await s.find('d1'), record('d1', { enabled: false, lastStep: 3 }))
})

t.test('addMany inserts 100 000 users in one call', async (t) => {
  const path = join(folder(), 'users.db')
  const s = createSqliteStore({ path })
  t.teardown(() => s.close())
  const many = Array.from({ length: 100_000 }, (_, i) => record(`user${i}`))
  await s.addMany(many)
  t.equal(peek(path).users, 100_000)
  t.equal((await s.find('user99999'))?.username, 'user99999')
})

t.test('a database locked by another connection is waited for without blocking, then reported busy', async (t) => {
  const path = join(folder(), 'users.db')
  const s = createSqliteStore({ path })
  t.teardown(() => s.close())
  await s.add(record('dave'))
  const other = new Database(path)
  t.teardown(() => other.close())
  other.exec('BEGIN IMMEDIATE')
  // Only a free event loop can run this timer while the claim waits for the lock.
  setTimeout(() => { other.exec('COMMIT') }, 100)
  t.equal(await s.claimStep('dave', 1), true, 'the claim went through once the lock was released')
  t.equal(await s.find('dave').then((u) => u?.lastStep), 1)

  other.exec('BEGIN IMMEDIATE')
  await t.rejects(s.update('dave', { enabled: false }), { code: 'BASTION_ERR_USER_STORE', message: `user store ${path} is busy` })
  other.exec('ROLLBACK')
  t.equal((await s.find('dave'))?.enabled, true, 'reads were never blocked and nothing changed')
})

t.test('the database, its -wal and -shm files are 0600 and a created folder 0700', async (t) => {
  const dir = join(folder(), 'data')
  const path = join(dir, 'users.db')
  const s = createSqliteStore({ path })
  t.teardown(() => s.close())
  await s.add(record('alice'))
  t.equal(statSync(dir).mode & 0o777, 0o700)
  for (const f of [path, `${path}-wal`, `${path}-shm`]) {
    t.ok(existsSync(f), `${f} exists`)
    t.equal(statSync(f).mode & 0o777, 0o600, `${f} is 0600`)
  }
})

t.test('a database readable by group or others is refused with an error naming it', async (t) => {
  const path = join(folder(), 'users.db')
  const s = createSqliteStore({ path })
  await s.add(record('alice'))
  await s.close()
  chmodSync(path, 0o640)
  const again = createSqliteStore({ path })
  t.teardown(() => again.close())
  await t.rejects(again.find('alice'), { code: 'BASTION_ERR_FILE_PERMISSIONS', message: `chmod 600 ${path}` })
  chmodSync(path, 0o600)
  t.equal((await again.find('alice'))?.username, 'alice', 'the next call opens it once fixed')
})

t.test('a file that is not a database is an error naming it, not an empty store', async (t) => {
  const path = join(folder(), 'users.db')
  writeFileSync(path, 'this is not a database, and long enough to have a header '.repeat(10), { mode: 0o600 })
  const s = createSqliteStore({ path })
  t.teardown(() => s.close())
  await t.rejects(s.find('x'), { code: 'BASTION_ERR_USER_STORE', message: `user store ${path}: file is not a database` })
})

t.test('a closed store refuses calls, and closing twice is harmless', async (t) => {
  const s = createSqliteStore({ path: join(folder(), 'users.db') })
  await s.add(record('alice'))
  await s.close()
  await s.close()
  await t.rejects(s.find('alice'), { code: 'BASTION_ERR_USER_STORE' })
})

const LEGACY: UserRecord[] = [
  { username: 'alice', passwordHash: '$2b$12$aliceHashaliceHashaliceHashaliceHashaliceHashalice', totpSecret: 'A'.repeat(32), enabled: true, createdAt: '2025-01-01T00:00:00.000Z' },
  { username: 'bob', passwordHash: '$2b$12$bobHash', totpSecret: 'B'.repeat(32), enabled: false, createdAt: '2025-02-01T00:00:00.000Z' },
  { username: 'carol', passwordHash: '$2b$12$carolHash', totpSecret: 'C'.repeat(32), enabled: true, createdAt: '2025-03-01T00:00:00.000Z', lastStep: 58_000_123 }
]

t.test('the legacy users.json is migrated once, exactly, and kept as users.json.migrated', async (t) => {
  const dir = folder()
  const json = join(dir, 'users.json')
  const path = join(dir, 'users.db')
  // carol has no `enabled` at all: the JSON store read that as enabled.
  const onDisk = LEGACY.map((u) => u.username === 'carol' ? { ...u, enabled: undefined } : u)
  writeFileSync(json, JSON.stringify({ version: 1, users: onDisk }, null, 2), { mode: 0o600 })

  const first = capture()
  const a = createSqliteStore({ path, log: first.log })
  const b = createSqliteStore({ path, log: first.log })
  const [listA, listB] = await Promise.all([a.list(), b.list()])
  t.same(listA, LEGACY, 'every field of every user')
  t.same(listB, LEGACY, 'a second store opening at the same time sees the same users')
  for (const u of LEGACY) t.same(await a.find(u.username), u)
  const migrated = first.lines.filter((l) => l.event === 'store.migrated')
  t.equal(migrated.length, 1, 'migrated and logged once')
  t.match(migrated[0], { level: 30, from: json, to: path, users: 3, msg: `migrated 3 users from ${json} into ${path} (the JSON file is kept as users.json.migrated)` })
  t.notOk(JSON.stringify(first.lines).includes('Hash'), 'no password hash in the log')
  t.notOk(existsSync(json))
  t.equal(statSync(`${json}.migrated`).mode & 0o777, 0o600, 'the kept file keeps its mode')
  t.equal(peek(path).migratedFrom, json)
  await a.close()
  await b.close()

  const second = capture()
  const again = createSqliteStore({ path, log: second.log })
  t.teardown(() => again.close())
  t.equal((await again.list()).length, 3)
  t.same(second.lines, [], 'a second open neither migrates nor logs')
})

t.test('a users.json that comes back after the migration is ignored with a warning', async (t) => {
  const dir = folder()
  const json = join(dir, 'users.json')
  const path = join(dir, 'users.db')
  writeFileSync(json, JSON.stringify({ version: 1, users: LEGACY }), { mode: 0o600 })
  const s = createSqliteStore({ path })
  await s.remove('alice')
  await s.close()
  writeFileSync(json, JSON.stringify({ version: 1, users: LEGACY }), { mode: 0o600 })
  const { lines, log } = capture()
  const again = createSqliteStore({ path, log })
  t.teardown(() => again.close())
  t.equal(await again.find('alice'), undefined, 'not migrated a second time')
  t.match(lines, [{ event: 'store.legacy_ignored', file: json }])
})

t.test('a malformed users.json is an error naming it, and the database stays empty', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['truncated', '{"users":[{"username":"alice","passwordHash":"$2b$12$SECRETHASH', /users\.json: not valid JSON/],
    ['no users array', '{"version":1}', /users\.json: not a mqtt-bastion users file/],
    ['a user without a hash', JSON.stringify({ users: [LEGACY[0], { username: 'bob', totpSecret: 'SECRETSECRET' }] }), /users\.json: users\[1\] \(user bob\): passwordHash must be a non-empty string/],
    ['a bad name', JSON.stringify({ users: [{ ...LEGACY[0], username: 'a/b' }] }), /users\.json: users\[0\]\.username must be/],
    ['names differing by case', JSON.stringify({ users: [LEGACY[0], LEGACY[1], { ...LEGACY[2], username: 'Alice' }] }), /users\.json: users alice and Alice differ only in case/]
  ]
  for (const [what, text, message] of cases) {
    const dir = folder()
    const json = join(dir, 'users.json')
    const path = join(dir, 'users.db')
    writeFileSync(json, text, { mode: 0o600 })
    const s = createSqliteStore({ path })
    const err = await s.list().then(() => undefined, (e: Error) => e)
    t.match(err, { code: 'BASTION_ERR_USER_STORE', message }, what)
    t.ok(err?.message.includes(json), `${what}: the error names ${json}`)
    t.notOk(/SECRET/.test(err?.message ?? ''), `${what}: no secret in the error`)
    t.same(peek(path), { users: 0 }, `${what}: no user and no migration record`)
    t.ok(existsSync(json), `${what}: the JSON file is left where it was`)
    await s.close()
  }
})

t.test('a users.json readable by others is refused before it is migrated', async (t) => {
  const dir = folder()
  const json = join(dir, 'users.json')
  writeFileSync(json, JSON.stringify({ version: 1, users: LEGACY }))
  chmodSync(json, 0o644)
  const s = createSqliteStore({ path: join(dir, 'users.db') })
  t.teardown(() => s.close())
  await t.rejects(s.find('alice'), { code: 'BASTION_ERR_FILE_PERMISSIONS', message: `chmod 600 ${json}` })
  chmodSync(json, 0o600)
  t.equal((await s.find('alice'))?.username, 'alice', 'migrated once the mode is fixed')
})

t.test('another process writing at the same time causes no error and loses nothing', async (t) => {
  const dist = join(process.cwd(), 'dist', 'stores', 'sqlite.js')
  t.ok(existsSync(dist), 'dist is built (npm run build)')
  const path = join(folder(), 'users.db')
  const s = createSqliteStore({ path })
  t.teardown(() => s.close())
  await s.addMany([record('writer'), record('claimer')])

  const child = spawn(process.execPath, ['--input-type=module', '-e', `
    import { createSqliteStore } from ${JSON.stringify(pathToFileURL(dist).href)}
    const s = createSqliteStore({ path: process.env.DB })
    await s.ping()
    process.stdout.write('ready\\n')
    for (let i = 0; i < 200; i++) await s.update('writer', { passwordHash: '$2b$04$hash' + i, enabled: i % 2 === 0 })
    await s.close()
    process.stdout.write('done\\n')
  `], { env: { ...process.env, DB: path }, stdio: ['ignore', 'pipe', 'pipe'], timeout: 60_000 })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  const deadline = Date.now() + 30_000
  while (!stdout.includes('ready') && child.exitCode === null && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))

  const claims: boolean[] = []
  for (let step = 1; step <= 200; step++) {
    claims.push(await s.claimStep('claimer', step))
    t.equal((await s.find('writer'))?.username, 'writer')
  }
  t.equal(await exited, 0, 'the other process finished without error')
  t.equal(stderr, '')
  t.match(stdout, /ready\ndone/)
  t.equal(claims.filter(Boolean).length, 200, 'every increasing step was claimed')
  t.equal((await s.find('claimer'))?.lastStep, 200)
  t.match(await s.find('writer'), { passwordHash: '$2b$04$hash199', enabled: false })
})
