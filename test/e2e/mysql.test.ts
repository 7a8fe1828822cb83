// The MySQL/MariaDB user store against a real MariaDB server started for this file:
// existing tables as they are, db migrate, revocation, replay across brokers, hostile
// usernames, and an outage in the middle of traffic.
import t from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import mysql from 'mysql2/promise'
import { newSecret } from '../../src/crypto/totp.js'
import { events, nextMessage, pubackCode, startHarness, type Harness } from '../helpers/harness.js'
import { startMariaDb } from '../helpers/mariadb.mjs'
import { scratch } from '../helpers/scratch.js'

const scratchDir = scratch('bastion-mysql-cfg-')

const run = promisify(execFile)
const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
// Made by Python: bcrypt.hashpw(b'correct horse battery', bcrypt.gensalt()) — cost 12, $2b$.
const PYTHON_HASH = '$2b$12$CAi96KlkEBVfN.iXyoyAp.fp97w1t0sIjPQ/EHTGMxNtkUyor7a0S'
const PASSWORD = 'correct horse battery'
// The table existing deployments already have, exactly.
const SEED_TABLE = `CREATE TABLE users (
  id INT AUTO_INCREMENT PRIMARY KEY,
  username VARCHAR(64) UNIQUE NOT NULL,
  password VARCHAR(100) NOT NULL,
  totp_secret VARCHAR(64) NOT NULL
)`

const db = await startMariaDb()
t.teardown(() => db.close())
const { url } = await db.createDatabase()
const sql = await mysql.createConnection(url)
t.teardown(() => sql.end())
await sql.query(SEED_TABLE)

const storeConfig = { type: 'mysql', url, connectTimeout: 1000, queryTimeout: 1500 }
const cfgDir = scratchDir()
const cfgFile = join(cfgDir, 'bastion.yaml')
writeFileSync(cfgFile, `auth:\n  store:\n    type: mysql\n    url: ${url}\n    connectTimeout: 1000\n    queryTimeout: 1500\n`)

async function cli (...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    return { ...(await run(process.execPath, [CLI, ...args, '--config', cfgFile])), code: 0 }
  } catch (err: any) {
    return { stdout: err.stdout, stderr: err.stderr, code: err.code }
  }
}

async function insertUser (name: string, hash = PYTHON_HASH): Promise<string> {
  const secret = newSecret()
  await sql.execute('INSERT INTO users (username, password, totp_secret) VALUES (?, ?, ?)', [name, hash, secret])
  return secret
}

async function broker (): Promise<Harness> {
  const h = await startHarness({ auth: { store: storeConfig } })
  t.teardown(() => h.close())
  return h
}

let oldTable: Harness
t.test('a row inserted by plain SQL with a Python-made bcrypt hash logs in over TLS (table without extras)', async (t) => {
  const h = oldTable = await broker()
  h.knowSecret('pyuser', await insertUser('pyuser'))
  // One code for both logins: computing it twice can straddle a 30 s step and yield a fresh, valid code.
  const username = `pyuser|${h.code('pyuser')}`
  const c = await h.connect('pyuser', { username })
  t.equal(c.connected, true)
  t.equal(await pubackCode(c, 'metrics/pyuser/Temperatura', '20'), 0)
  await c.endAsync()
  t.ok(events(h, 'store.replay_local_only').length === 1, 'warns that replay protection is per process without last_step')
  t.equal(await h.refused({ username, password: PASSWORD }), 0x86, 'and a replay is still refused by this broker')
})

t.test('db check reports the missing extras, db migrate adds them, a second migrate changes nothing', async (t) => {
  const before = await cli('db', 'check')
  t.equal(before.code, 0, before.stderr)
  t.match(before.stdout, /missing optional column\(s\): enabled, last_step, created_at/)
  const first = await cli('db', 'migrate')
  t.equal(first.code, 0, first.stderr)
  t.equal(first.stdout.trim().split('\n').length, 3, 'three ALTER TABLE statements')
  t.match(first.stdout, /ALTER TABLE `users` ADD COLUMN `last_step` BIGINT NULL/)
  const second = await cli('db', 'migrate')
  t.match(second.stdout, /up to date, nothing to do/)
  t.match((await cli('db', 'check')).stdout, /all optional columns present/)
  const [rows] = await sql.query<any[]>('SELECT username, enabled FROM users WHERE username = ?', ['pyuser'])
  t.same(rows, [{ username: 'pyuser', enabled: 1 }], 'existing rows kept, enabled by default')
  // The broker that started on the old table sees the new columns at SIGHUP's reload.
  t.equal((await cli('user', 'disable', 'pyuser')).code, 0)
  await oldTable.bastion.reload()
  t.equal(await oldTable.refused({ username: `pyuser|${oldTable.code('pyuser', 1)}`, password: PASSWORD }), 0x86, 'a user disabled right after db migrate is refused after the reload')
  t.match(events(oldTable, 'login.failed').at(-1), { reason: 'disabled_user' })
  t.equal((await cli('user', 'enable', 'pyuser')).code, 0)
})

t.test('db check names what is wrong with a table that cannot work', async (t) => {
  await sql.query('CREATE TABLE accounts (id INT PRIMARY KEY, login VARCHAR(64))')
  const other = join(cfgDir, 'accounts.yaml')
  writeFileSync(other, `auth:\n  store: { type: mysql, url: "${url}", table: accounts }\n`)
  const r = await run(process.execPath, [CLI, 'db', 'check', '--config', other]).catch((e: any) => e)
  t.equal(r.code, 1)
  t.match(r.stderr, /missing required column\(s\) username, password, totp_secret/)
})

let h2: Harness
let h3: Harness

t.test('a case-insensitive username column: ALICE logs in as the row\'s own name, never as another ACL branch', async (t) => {
  const h = await broker()
  h.knowSecret('casey', await insertUser('casey'))
  const c = await h.connect('casey', { username: `CASEY|${h.code('casey')}` })
  t.equal(c.connected, true, 'MariaDB\'s default collation finds the row')
  t.equal(events(h, 'login.ok').at(-1)?.user, 'casey', 'the identity is the stored name')
  t.equal(await pubackCode(c, 'metrics/casey/Temperatura', '20'), 0, 'its own branch is open')
  t.equal(await pubackCode(c, 'metrics/CASEY/Temperatura', '20'), 0x87, 'the branch of the name as typed is not')
  await c.endAsync()
})

t.test('a code accepted by one broker is refused by another sharing the database', async (t) => {
  h2 = await broker()
  h3 = await broker()
  const secret = await insertUser('shared1')
  h2.knowSecret('shared1', secret)
  h3.knowSecret('shared1', secret)
  const username = `shared1|${h2.code('shared1')}`
  const c = await h2.connect('shared1', { username })
  t.equal(c.connected, true)
  t.equal(await h3.refused({ username, password: PASSWORD }), 0x86)
  t.equal(events(h3, 'login.failed').at(-1)?.reason, 'replayed_otp')
  const [rows] = await sql.query<any[]>('SELECT last_step FROM users WHERE username = ?', ['shared1'])
  t.ok(Number(rows[0].last_step) > 0, 'the claimed step is in the database')
  await c.endAsync()
})

t.test('concurrent logins with one code on two brokers: exactly one wins', async (t) => {
  const secret = await insertUser('race1')
  h2.knowSecret('race1', secret)
  h3.knowSecret('race1', secret)
  const username = `race1|${h2.code('race1')}`
  const outcomes = await Promise.all([h2, h3, h2, h3].map(async (h) => await h.connect('race1', { username }).then((c) => { c.end(true); return 'ok' }, () => 'refused')))
  t.equal(outcomes.filter((o) => o === 'ok').length, 1, outcomes.join(','))
})

t.test('disabling or deleting a user in the database refuses the next login at once', async (t) => {
  const secret = await insertUser('revoked1')
  h2.knowSecret('revoked1', secret)
  const c = await h2.connect('revoked1')
  await c.endAsync()
  await sql.execute('UPDATE users SET enabled = 0 WHERE username = ?', ['revoked1'])
  t.equal(await h2.refused({ username: `revoked1|${h2.code('revoked1', 1)}`, password: PASSWORD }), 0x86)
  t.equal(events(h2, 'login.failed').at(-1)?.reason, 'disabled_user')
  await sql.execute('DELETE FROM users WHERE username = ?', ['revoked1'])
  t.equal(await h2.refused({ username: `revoked1|${h2.code('revoked1', 1)}`, password: PASSWORD }), 0x86)
  t.equal(events(h2, 'login.failed').at(-1)?.reason, 'unknown_user')
})

t.test('usernames carrying SQL are refused before any query and the table is intact', async (t) => {
  const [[before]] = await sql.query<any[]>('SELECT COUNT(*) AS n FROM users')
  for (const evil of ["' OR '1'='1", 'a;DROP TABLE users', "pyuser' -- ", 'x\\\' OR 1=1 #']) {
    t.equal(await h2.refused({ username: `${evil}|123456`, password: PASSWORD }), 0x86, evil)
    t.equal(events(h2, 'login.failed').at(-1)?.reason, 'invalid_username')
  }
  const [[after]] = await sql.query<any[]>('SELECT COUNT(*) AS n FROM users')
  t.equal(after.n, before.n)
})

t.test('the CLI manages users in MySQL with the same commands', async (t) => {
  const add = await cli('user', 'add', 'cliuser', '--password', 'cli-password', '--json')
  t.equal(add.code, 0, add.stderr)
  const { totpSecret } = JSON.parse(add.stdout)
  const [rows] = await sql.query<any[]>('SELECT password, totp_secret FROM users WHERE username = ?', ['cliuser'])
  t.match(rows[0].password, /^\$2[ab]\$12\$/, 'a bcrypt hash in the password column')
  t.equal(rows[0].totp_secret, totpSecret)
  t.match((await cli('user', 'list')).stdout, /cliuser\tenabled/)
  t.match((await cli('user', 'add', 'cliuser', '--password', 'cli-password')).stderr, /already exists/)
  const otp = (await cli('user', 'otp', 'cliuser')).stdout.trim()
  t.match(otp, /^\d{6}$/)
  const c = await h2.connect('cliuser', { username: `cliuser|${otp}`, password: 'cli-password' })
  t.equal(c.connected, true)
  await c.endAsync()
  t.equal((await cli('user', 'disable', 'cliuser')).code, 0)
  t.match((await cli('user', 'list')).stdout, /cliuser\tdisabled/)
  t.equal((await cli('user', 'remove', 'cliuser')).code, 0)
  t.match((await cli('user', 'remove', 'cliuser')).stderr, /no such user/)
})

t.test('user import into MySQL keeps each user\'s createdAt, so export gives back what was imported', async (t) => {
  const file = join(cfgDir, 'import.jsonl')
  const lines = [
    { username: 'imp-old', passwordHash: PYTHON_HASH, totpSecret: newSecret(), enabled: true, createdAt: '2020-01-02T03:04:05.000Z' },
    { username: 'imp-new', passwordHash: PYTHON_HASH, totpSecret: newSecret(), enabled: false }
  ]
  writeFileSync(file, lines.map((l) => JSON.stringify(l)).join('\n') + '\n', { mode: 0o600 })
  const before = Date.now()
  const imp = await cli('user', 'import', file)
  t.equal(imp.code, 0, imp.stderr)
  const exported = (await cli('user', 'export')).stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l))
  const old = exported.find((u: any) => u.username === 'imp-old')
  t.equal(old?.createdAt, '2020-01-02T03:04:05.000Z', 'the date from the file, not the import time')
  const fresh = exported.find((u: any) => u.username === 'imp-new')
  t.ok(Date.parse(fresh?.createdAt) >= Math.floor(before / 1000) * 1000 - 1000, `a line without createdAt gets the import time (${fresh?.createdAt})`)
  t.equal(fresh?.enabled, false)
  await sql.query('DELETE FROM users WHERE username IN (?, ?)', ['imp-old', 'imp-new'])
})

t.test('a flood of wrong codes from 40 addresses fills a one-connection pool: busy (0x89), never an outage, and the device logs in after', async (t) => {
  // queryTimeout well above the lock below: a lookup that waits is slow, not failed.
  const h = await startHarness({ auth: { store: { ...storeConfig, poolSize: 1, queryTimeout: 15000 }, lockout: { maxFailuresPerIp: 0, maxFailuresPerUser: 0 } } })
  t.teardown(() => h.close())
  const secret = await insertUser('flooded')
  h.knowSecret('flooded', secret)
  // The table is write-locked until the first busy answer (at most 10 s, however slow the
  // machine is to make 120 TLS handshakes): lookups wait, the one pooled connection and its
  // queue of 4 fill, and the rest of the flood meets a full pool.
  const locker = await mysql.createConnection(url)
  t.teardown(async () => { await locker.end() })
  await locker.query('LOCK TABLES users WRITE')
  let unlocked: Promise<unknown> | undefined
  const release = (): void => { unlocked ??= locker.query('UNLOCK TABLES').catch(() => {}) }
  const unlock = setTimeout(release, 10_000)
  const answers = await Promise.all(Array.from({ length: 120 }, async (_, i) => {
    const code = await h.refused({
      username: `${i % 2 === 0 ? 'flooded' : `nobody${i}`}|000000`, password: 'guess', clientId: `flood-${i}`, localAddress: `127.0.0.${2 + (i % 40)}`
    } as any)
    if (code === 0x89) release()
    return code
  }))
  clearTimeout(unlock)
  await unlocked
  await locker.query('UNLOCK TABLES')
  t.ok(answers.includes(0x89), 'the flood did fill the pool')
  t.ok(answers.every((a) => a === 0x86 || a === 0x89), `only 0x86 and 0x89 (${[...new Set(answers)].join(', ')})`)
  t.same(events(h, 'store.unavailable'), [], 'a full pool is not logged as an outage')
  t.notOk(answers.includes(0x88), 'and never answered as one')
  const c = await h.connect('flooded')
  t.ok(c.connected, 'the device logs in once the flood is over')
})

t.test('database down: new logins get 0x88 / 3, connected clients keep working, recovery needs no restart', async (t) => {
  if (!db.canRestart) throw new Error('this test stops and restarts MariaDB: unset MYSQL_URL so the harness starts its own server')
  const secret = await insertUser('outage1')
  h2.knowSecret('outage1', secret)
  const live = await h2.connect('outage1')
  await live.subscribeAsync('metrics/outage1/#', { qos: 1 })
  const unavailableBefore = events(h2, 'store.unavailable').length

  await db.stop()
  const got = nextMessage(live, 3000)
  t.equal(await pubackCode(live, 'metrics/outage1/Temperatura', 'during outage'), 0, 'a connected client publishes')
  t.equal((await got)?.payload, 'during outage', 'and receives')
  t.equal(await h2.refused({ username: `outage1|${h2.code('outage1', 1)}`, password: PASSWORD }), 0x88, 'MQTT 5 login refused: server unavailable')
  t.equal(await h2.refused({ username: `outage1|${h2.code('outage1', 1)}`, password: PASSWORD, protocolVersion: 4 }), 3, '3.1.1 login refused with return code 3')
  t.equal(events(h2, 'store.unavailable').length - unavailableBefore, 1, 'the outage is logged once, not per login')
  t.equal(events(h2, 'login.failed').at(-1)?.reason, 'backend_unavailable')

  await db.start()
  const back = await h2.connect('outage1', { offset: 1 })
  t.equal(back.connected, true, 'logins work again without restarting the broker')
  t.equal(events(h2, 'store.recovered').length, 1, 'the recovery is logged once')
  await back.endAsync()
  t.equal(live.connected, true, 'the client connected through the outage is still up')
  await live.endAsync()
})
