// Revocation reaches live sessions: users changed by the real CLI (file store), by plain SQL
// (MySQL) or in a reloaded Mosquitto password file lose their connections with DISCONNECT 0x98
// (3.1.1: closed), others keep theirs, and a store outage ends nobody's session.
import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import bcrypt from 'bcryptjs'
import mqtt, { type MqttClient } from 'mqtt'
import mysqlDriver from 'mysql2/promise'
import { newSecret } from '../../src/crypto/totp.js'
import { PASSWORD, events, nextMessage, pubackCode, startHarness, type Harness } from '../helpers/harness.js'
import { startMariaDb } from '../helpers/mariadb.mjs'

const run = promisify(execFile)
const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
// auth.recheckInterval 1: a change is seen within about a second; waits below are bounds only.
const RECHECK = { recheckInterval: 1, totp: { replayProtection: false } }
const WAIT_MS = 10_000

/** How a connection ended: the DISCONNECT reason code (MQTT 5), `closed` without one, or `alive` when the bound passed. */
function ending (c: MqttClient, ms = WAIT_MS): Promise<number | 'closed' | 'alive'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('alive'), ms)
    c.once('disconnect', (p) => { clearTimeout(timer); resolve(p.reasonCode ?? 0) })
    c.once('close', () => { clearTimeout(timer); setImmediate(() => resolve('closed')) })
  })
}

/** A connection still serves both ways. */
async function serves (t: Tap.Test, c: MqttClient, user: string, what: string): Promise<void> {
  const got = nextMessage(c, 3000)
  t.equal(await pubackCode(c, `metrics/${user}/Estado`, what), 0, `${user} still publishes (${what})`)
  t.equal((await got)?.payload, what, `${user} still receives (${what})`)
}

async function subscribed (h: Harness, user: string, opts: Parameters<Harness['connect']>[1] = {}): Promise<MqttClient> {
  const c = await h.connect(user, opts)
  await c.subscribeAsync(`metrics/${user}/#`, { qos: 1 })
  return c
}

t.test('SQLite store: disable, remove, passwd and rotate-totp with the CLI end that user\'s live sessions and no others', async (t) => {
  const h = await startHarness({ auth: RECHECK })
  t.teardown(() => h.close())
  const cfg = join(h.dir, 'cli.yaml')
  writeFileSync(cfg, 'auth:\n  store: { type: sqlite, path: data/users.db }\n')
  const bystander = 'steady'
  await h.addUser(bystander)
  const keep = await subscribed(h, bystander, { clientId: 'steady-1' })
  const cases: Array<[string, string[], string]> = [
    ['off1', ['user', 'disable', 'off1'], 'disabled'],
    ['gone1', ['user', 'remove', 'gone1'], 'removed'],
    ['pw1', ['user', 'passwd', 'pw1', '--password', 'a-new-base-password'], 'credentials_changed'],
    ['totp1', ['user', 'rotate-totp', 'totp1'], 'credentials_changed']
  ]
  for (const [user, args, reason] of cases) {
    await h.addUser(user)
    const v5 = await h.connect(user, { clientId: `${user}-v5` })
    const v4 = await h.connect(user, { clientId: `${user}-v4`, protocolVersion: 4 })
    const [e5, e4] = [ending(v5), ending(v4)]
    const keepEnds = ending(keep, 1)
    const r = await run(process.execPath, [CLI, ...args, '--config', cfg])
    t.match(r.stderr, /^$/, `${args.join(' ')}: no error`)
    t.equal(await e5, 0x98, `${user}: MQTT 5 DISCONNECT 0x98 Administrative action`)
    t.equal(await e4, 'closed', `${user}: the 3.1.1 connection is closed`)
    t.equal(await keepEnds, 'alive')
    await serves(t, keep, bystander, `after ${args[1]}`)
    const revoked = events(h, 'session.revoked').filter((e) => e.user === user)
    t.same(revoked.map((e) => [e.clientId, e.remote, e.reason]).sort(), [[`${user}-v4`, '127.0.0.1', reason], [`${user}-v5`, '127.0.0.1', reason]])
    t.ok(revoked.every((e) => e.level === 40), 'at warn')
  }
  t.equal(events(h, 'session.revoked').length, 8, 'nobody else was revoked')
  t.equal(events(h, 'will.published').length, 0, 'no will, client or server, for a revoked session')
})

t.test('a reloaded Mosquitto password file ends the sessions of users it dropped at once (SIGHUP)', async (t) => {
  let passwd = ''
  const h = await startHarness({ auth: { store: { type: 'mosquitto-passwd', path: 'passwd' }, recheckInterval: 3600 } }, {
    prepare: async (dir) => {
      passwd = join(dir, 'passwd')
      execFileSync('mosquitto_passwd', ['-c', '-b', passwd, 'mp1', 'mp1-password'])
      execFileSync('mosquitto_passwd', ['-b', passwd, 'mp2', 'mp2-password'])
      chmodSync(passwd, 0o600)
    }
  })
  t.teardown(() => h.close())
  const base = { host: '127.0.0.1', port: h.port, protocol: 'mqtts' as const, ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5 as const }
  const mp1 = await mqtt.connectAsync({ ...base, username: 'mp1', password: 'mp1-password' })
  const mp2 = await mqtt.connectAsync({ ...base, username: 'mp2', password: 'mp2-password' })
  t.teardown(() => { mp1.end(true); mp2.end(true) })
  const [e1, e2] = [ending(mp1), ending(mp2, 1000)]
  execFileSync('mosquitto_passwd', ['-D', passwd, 'mp1'])
  await h.bastion.reload()
  t.equal(await e1, 0x98, 'the dropped user is disconnected by the reload, long before the hourly re-check')
  t.equal(await e2, 'alive', 'the other user stays')
  t.same(events(h, 'session.revoked').map((e) => [e.user, e.reason]), [['mp1', 'removed']])
})

t.test('MySQL: an UPDATE in SQL ends the session with 0x98; a database outage ends none', async (t) => {
  const db = await startMariaDb()
  t.teardown(() => db.close())
  if (!db.canRestart) throw new Error('this test stops MariaDB: unset MYSQL_URL so it starts its own server')
  const { url } = await db.createDatabase()
  const sql = await mysqlDriver.createConnection(url)
  t.teardown(() => sql.end())
  await sql.query(`CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, username VARCHAR(64) UNIQUE NOT NULL, password VARCHAR(100) NOT NULL,
    totp_secret VARCHAR(64) NOT NULL, enabled TINYINT(1) NOT NULL DEFAULT 1, last_step BIGINT NULL)`)
  const h = await startHarness({ auth: { ...RECHECK, store: { type: 'mysql', url, connectTimeout: 1000, queryTimeout: 1500 } } })
  t.teardown(() => h.close())
  const hash = bcrypt.hashSync(PASSWORD, 4)
  for (const user of ['sqloff', 'sqlstay']) {
    const secret = newSecret()
    await sql.execute('INSERT INTO users (username, password, totp_secret) VALUES (?, ?, ?)', [user, hash, secret])
    h.knowSecret(user, secret)
  }
  const off = await h.connect('sqloff', { clientId: 'sqloff-1' })
  const stay = await subscribed(h, 'sqlstay', { clientId: 'sqlstay-1' })
  const ended = ending(off)
  await sql.execute('UPDATE users SET enabled = 0 WHERE username = ?', ['sqloff'])
  t.equal(await ended, 0x98)
  t.same(events(h, 'session.revoked').map((e) => [e.user, e.reason]), [['sqloff', 'disabled']])

  const staysUp = ending(stay, 1)
  await db.stop()
  // Bounded: the re-check runs every second and a lookup gives up after queryTimeout.
  for (let i = 0; i < 100 && events(h, 'store.recheck_failed').length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(events(h, 'store.recheck_failed').length, 1, 'the failed re-check is logged')
  await new Promise((resolve) => setTimeout(resolve, 3000)) // a few more failing rounds
  t.equal(await staysUp, 'alive', 'nobody is disconnected by the outage')
  await serves(t, stay, 'sqlstay', 'during the outage')
  t.equal(events(h, 'store.recheck_failed').length, 1, 'logged once per outage, not per round')
  t.equal(events(h, 'session.revoked').length, 1)
  await db.start()
  await serves(t, stay, 'sqlstay', 'after the outage')
})
