// /healthz and /metrics of a real broker over real TLS: off by default, loopback when on,
// counters that move with logins, refusals and deliveries, and health that follows a real
// MariaDB going down and coming back.
import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import mysql from 'mysql2/promise'
import { flaskLike, startGoAuthService, type Reply } from '../helpers/go-auth-service.js'
import { events, nextMessage, PASSWORD, pubackCode, startHarness, subackCode, type Harness } from '../helpers/harness.js'
import { startMariaDb } from '../helpers/mariadb.mjs'
import { sample } from '../helpers/prometheus.js'

const MONITORING = { enabled: true, port: 0 }

async function get (h: Harness, path: string): Promise<{ status: number; type: string | null; body: string }> {
  const m = h.bastion.monitoring
  if (m === undefined) throw new Error('monitoring is off in this broker')
  const res = await fetch(`http://${m.host}:${m.port}${path}`, { signal: AbortSignal.timeout(5000) })
  return { status: res.status, type: res.headers.get('content-type'), body: await res.text() }
}

async function metrics (h: Harness): Promise<string> {
  const r = await get(h, '/metrics')
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`)
  return r.body
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** Polls /healthz until it answers `status`, at most `tries` times, 500 ms apart. */
async function healthBecomes (h: Harness, status: number, tries: number): Promise<{ status: number; body: string }> {
  let last = { status: 0, body: '' }
  for (let i = 0; i < tries; i++) {
    last = await get(h, '/healthz')
    if (last.status === status) return last
    await sleep(500)
  }
  return last
}

t.test('the monitoring listener is off by default: nothing bound, nothing logged', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  t.equal(h.bastion.monitoring, undefined)
  t.same(events(h, 'listener.started').map((e) => e.type), ['tls'], 'only the MQTT listener started')
})

t.test('when on, it binds 127.0.0.1 and logs listener.started with type monitoring', async (t) => {
  const h = await startHarness({ monitoring: MONITORING })
  t.teardown(() => h.close())
  t.equal(h.bastion.monitoring?.host, '127.0.0.1')
  t.ok((h.bastion.monitoring?.port ?? 0) > 0, 'a real port for port 0')
  t.match(events(h, 'listener.started').find((e) => e.type === 'monitoring'), { host: '127.0.0.1', port: h.bastion.monitoring?.port })
})

t.test('a broker that checks TOTP codes warns at start that they depend on the system clock', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  const notice = events(h, 'clock.notice')[0]
  t.equal(notice?.level, 40, 'a warning')
  t.match(notice?.msg, /timedatectl show -p NTPSynchronized/)
})

t.test('a running broker is healthy; unknown paths are 404, other methods 405', async (t) => {
  const h = await startHarness({ monitoring: MONITORING })
  t.teardown(() => h.close())
  t.same(await get(h, '/healthz'), { status: 200, type: 'text/plain; charset=utf-8', body: 'ok\n' })
  t.equal((await get(h, '/')).status, 404)
  t.equal((await get(h, '/metrics/x')).status, 404)
  const m = h.bastion.monitoring as { host: string; port: number }
  const post = await fetch(`http://${m.host}:${m.port}/metrics`, { method: 'POST', signal: AbortSignal.timeout(5000) })
  t.equal(post.status, 405)
  t.equal(post.headers.get('allow'), 'GET, HEAD')
})

t.test('/healthz turns 503 naming the listener when an MQTT listener stops accepting', async (t) => {
  const h = await startHarness({ monitoring: MONITORING, listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }, { type: 'tcp', port: 0 }] })
  t.teardown(() => h.close())
  t.equal((await get(h, '/healthz')).status, 200)
  const plain = h.bastion.listeners[1] as { close: () => Promise<void>; port: number }
  await plain.close()
  const r = await get(h, '/healthz')
  t.equal(r.status, 503)
  t.match(r.body, new RegExp(`tcp listener 127\\.0\\.0\\.1:${plain.port} is not accepting`))
})

t.test('metrics move with logins, refusals, deliveries and bytes, and name no user or topic', async (t) => {
  const h = await startHarness({ monitoring: MONITORING })
  t.teardown(() => h.close())
  await h.addUser('alice')
  await h.addUser('bob')
  await h.addUser('drifter')

  const before = await metrics(h)
  t.equal(before.length > 0 && (await get(h, '/metrics')).type, 'text/plain; version=0.0.4; charset=utf-8')
  t.equal(sample(before, 'bastion_logins_total', { result: 'ok' }), 0)
  t.equal(sample(before, 'bastion_lockouts_total'), 0, 'lockouts exist as a series, at 0')
  t.equal(sample(before, 'bastion_connected_clients'), 0)

  const sub = await h.connect('alice', { clientId: 'alice-dash' })
  await sub.subscribeAsync('metrics/alice/#', { qos: 1 })
  t.equal(await h.refused({ username: `alice|${h.code('alice', 1)}`, password: 'wrong password' }), 0x86)
  const bob = await h.connect('bob', { clientId: 'bob-dev' })
  t.equal(await pubackCode(bob, 'metrics/alice/Temperatura', '1'), 0x87, 'bob may not publish on alice\'s branch')
  t.equal(await subackCode(bob, 'metrics/#'), 0x87, 'nor subscribe to everything')
  const got = nextMessage(sub)
  const dev = await h.connect('drifter', { clientId: 'drifter-dev', offset: 1 })
  t.equal(await pubackCode(sub, 'metrics/alice/Temperatura', '{"value":22.5}'), 0)
  t.equal((await got)?.payload, '{"value":22.5}', 'delivered to the subscriber')

  const after = await metrics(h)
  t.equal(sample(after, 'bastion_logins_total', { result: 'ok', reason: 'none' }), 3, 'three logins accepted')
  t.equal(sample(after, 'bastion_logins_total', { result: 'failed', reason: 'bad_password' }), 1, 'the refusal, by reason')
  t.equal(sample(after, 'bastion_acl_denials_total', { action: 'publish' }), 1)
  t.equal(sample(after, 'bastion_acl_denials_total', { action: 'subscribe' }), 1)
  t.equal(sample(after, 'bastion_messages_received_total'), 1, 'the allowed publish came in (the refused one did not)')
  t.equal(sample(after, 'bastion_messages_delivered_total'), 1, 'and went out to the one subscriber')
  t.equal(sample(after, 'bastion_connected_clients'), 3)
  t.equal(sample(after, 'bastion_totp_window_edge_logins_total'), 1, 'the code one step ahead is a drifting clock')
  t.ok((sample(after, 'bastion_received_bytes_total') ?? 0) > 0, 'bytes in')
  t.ok((sample(after, 'bastion_sent_bytes_total') ?? 0) > 0, 'bytes out')
  t.ok((sample(after, 'bastion_store_lookup_duration_seconds_count', { store: 'sqlite' }) ?? 0) >= 4, 'every login looked the user up, timed')
  t.ok(sample(after, 'process_cpu_user_seconds_total') !== undefined, 'process metrics too')
  for (const secretish of ['alice', 'bob', 'drifter', 'Temperatura', PASSWORD]) t.notMatch(after, secretish, `no "${secretish}" anywhere`)

  const sentBefore = sample(after, 'bastion_sent_bytes_total') ?? 0
  await Promise.all([sub, bob, dev].map(async (c) => await c.endAsync()))
  let closed = await metrics(h)
  // The broker sees the DISCONNECTs shortly after the clients have sent them.
  for (let i = 0; i < 20 && sample(closed, 'bastion_connected_clients') !== 0; i++) {
    await sleep(100)
    closed = await metrics(h)
  }
  t.equal(sample(closed, 'bastion_connected_clients'), 0, 'clients gone')
  t.ok((sample(closed, 'bastion_sent_bytes_total') ?? 0) >= sentBefore, 'bytes of closed connections are kept')
})

t.test('the certificate expiry gauge shows each TLS listener\'s certificate, unix seconds', async (t) => {
  const h = await startHarness({ monitoring: MONITORING })
  t.teardown(() => h.close())
  const expected = Math.floor(new Date(new X509Certificate(readFileSync(join(h.dir, 'certs', 'server.crt'))).validTo).getTime() / 1000)
  t.equal(sample(await metrics(h), 'bastion_certificate_expiry_timestamp_seconds', { listener: `tls://127.0.0.1:${h.port}` }), expected)
})

t.test('/healthz turns 503 while the MySQL store\'s database is down and 200 again when it returns', async (t) => {
  const db = await startMariaDb()
  t.teardown(() => db.close())
  if (!db.canRestart) throw new Error('this test stops and restarts MariaDB: unset MYSQL_URL so the test starts its own server')
  const { url } = await db.createDatabase()
  const sql = await mysql.createConnection(url)
  await sql.query('CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, username VARCHAR(64) UNIQUE NOT NULL, password VARCHAR(100) NOT NULL, totp_secret VARCHAR(64) NOT NULL)')
  await sql.end()
  const h = await startHarness({ auth: { store: { type: 'mysql', url, connectTimeout: 1000, queryTimeout: 1500 } }, monitoring: MONITORING })
  t.teardown(() => h.close())

  t.same(await get(h, '/healthz'), { status: 200, type: 'text/plain; charset=utf-8', body: 'ok\n' })
  await db.stop()
  const down = await healthBecomes(h, 503, 20)
  t.equal(down.status, 503, 'unhealthy while the database is down')
  t.match(down.body, /^user store unavailable: .+\n$/, 'with a one-line reason')
  t.notMatch(down.body, /\n./, 'one line')
  await db.start()
  t.equal((await healthBecomes(h, 200, 40)).status, 200, 'healthy again once it answers, without a restart')
})

t.test('with an HTTP auth backend, /healthz reports the outage logins met and its end; lookups are timed', async (t) => {
  let trouble: Reply | undefined
  const flask = flaskLike({ alice: { password: PASSWORD, code: '123456', publish: [], subscribe: [] } })
  const svc = await startGoAuthService((r) => trouble ?? flask(r))
  t.teardown(() => svc.close())
  const h = await startHarness({ auth: { store: { type: 'http', url: svc.url, timeout: 500 } }, acl: { policy: 'http' }, monitoring: MONITORING })
  t.teardown(() => h.close())
  t.equal((await get(h, '/healthz')).status, 200)
  t.equal(events(h, 'clock.notice').length, 0, 'no clock notice: the backend checks codes itself')

  trouble = { hangup: true }
  t.equal(await h.refused({ username: 'alice|123456', password: PASSWORD }), 0x88)
  const down = await get(h, '/healthz')
  t.equal(down.status, 503)
  t.match(down.body, /^auth backend unavailable: .+\n$/)
  t.equal(sample(await metrics(h), 'bastion_logins_total', { result: 'failed', reason: 'backend_unavailable' }), 1)

  trouble = undefined
  const c = await h.connect('alice', { username: 'alice|123456' })
  await c.endAsync()
  t.equal((await get(h, '/healthz')).status, 200, 'healthy again after a login the backend answered')
  t.equal(sample(await metrics(h), 'bastion_store_lookup_duration_seconds_count', { store: 'http' }), 2)
})
