// The go-auth HTTP contract against a real HTTP service: what is sent, how answers are read,
// failing closed, the positive-answer cache and the outage log.
import t, { type Test } from 'tap'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { createHttpAclPolicy } from '../../src/acl/http.js'
import { createGoAuthClient, createHttpAuthenticator, type GoAuthClient } from '../../src/auth/http-backend.js'
import { initCertificates } from '../../src/certs/issue.js'
import type { HttpBackendConfig } from '../../src/config/schema.js'
import { BastionError } from '../../src/errors.js'
import { REDACT_PATHS, type Logger } from '../../src/log.js'
import type { Identity } from '../../src/types.js'
import { closedPort, flaskLike, startGoAuthService, type GoAuthService, type Received, type Reply } from '../helpers/go-auth-service.js'

const PASSWORD = 'pässword 1&2=3'
const accounts = { alice: { password: PASSWORD, code: '123456', publish: ['metrics/alice/Temperatura'], subscribe: ['metrics/alice/#'] } }

function config (url: string, extra: Partial<HttpBackendConfig> = {}): HttpBackendConfig {
  return { type: 'http', url, userPath: '/auth/user', aclPath: '/auth/acl', paramsMode: 'json', responseMode: 'json', timeout: 2000, cacheTtl: 0, ...extra }
}

function logger (): { log: Logger; lines: Array<Record<string, any>>; text: () => string } {
  const lines: Array<Record<string, any>> = []
  let text = ''
  const dest = new Writable({
    write (chunk: Buffer, _enc, cb) {
      text += chunk.toString()
      for (const l of chunk.toString().split('\n')) if (l.trim() !== '') lines.push(JSON.parse(l))
      cb()
    }
  })
  return { log: pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, dest), lines, text: () => text }
}

const silent: Logger = pino({ level: 'silent' })
const services: GoAuthService[] = []
const clients: GoAuthClient[] = []
t.teardown(async () => {
  for (const c of clients) await c.close()
  for (const s of services) await s.close()
})

async function service (answer: (r: Received) => Reply): Promise<GoAuthService> {
  const s = await startGoAuthService(answer)
  services.push(s)
  return s
}

function client (cfg: HttpBackendConfig, log: Logger = silent): GoAuthClient {
  const c = createGoAuthClient(cfg, log)
  clients.push(c)
  return c
}

const alice: Identity = { user: 'alice', clientId: 'dev-1', remoteAddress: '127.0.0.1', hasWill: false, mqttUsername: 'alice|123456' }
// `null`: the CONNECT carried no password at all.
const req = (username: string | undefined, password: string | null = PASSWORD) =>
  ({ username, password: password === null ? undefined : Buffer.from(password), clientId: 'dev-1', remoteAddress: '127.0.0.1' })

async function unavailable (t: Test, p: Promise<unknown>, what: string): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e)
  t.ok(err instanceof BastionError, `${what}: a BastionError`)
  t.equal((err as BastionError | undefined)?.code, 'BASTION_ERR_BACKEND_UNAVAILABLE', `${what}: backend unavailable`)
}

t.test('a JSON-mode login POSTs username verbatim, password and clientid, as go-auth does', async (t) => {
  const svc = await service(flaskLike(accounts))
  const auth = createHttpAuthenticator(config(svc.url), silent, client(config(svc.url)))
  t.same(await auth.login(req('alice|123456')), { ok: true, user: 'alice' })
  const r = svc.received[0] as Received
  t.equal(r.method, 'POST')
  t.equal(r.path, '/auth/user')
  t.equal(r.headers['content-type'], 'application/json')
  t.same(r.fields, { username: 'alice|123456', password: PASSWORD, clientid: 'dev-1' }, 'exactly these fields')
  t.equal(r.raw, JSON.stringify({ clientid: 'dev-1', password: PASSWORD, username: 'alice|123456' }), 'keys sorted like Go\'s map encoding')
  t.same(await auth.login(req('alice|654321')), { ok: false, reason: 'backend_denied', user: 'alice' }, 'a wrong code is the service\'s "no"')
})

t.test('a form-mode login and ACL check send strings only, acc included', async (t) => {
  const svc = await service(flaskLike(accounts))
  const cfg = config(svc.url, { paramsMode: 'form' })
  const c = client(cfg)
  const auth = createHttpAuthenticator(cfg, silent, c)
  const acl = createHttpAclPolicy(cfg, silent, c)
  t.same(await auth.login(req('alice|123456')), { ok: true, user: 'alice' })
  t.same(await acl.decide(alice, 'publish', 'metrics/alice/Temperatura'), { allow: true })
  const [user, pub] = svc.received as [Received, Received]
  t.equal(user.headers['content-type'], 'application/x-www-form-urlencoded')
  t.same(user.fields, { username: 'alice|123456', password: PASSWORD, clientid: 'dev-1' })
  t.equal(user.raw, new URLSearchParams([['clientid', 'dev-1'], ['password', PASSWORD], ['username', 'alice|123456']]).toString())
  t.same(pub.fields, { username: 'alice|123456', clientid: 'dev-1', topic: 'metrics/alice/Temperatura', acc: '2' }, 'acc is the string "2" in a form')
})

t.test('the ACL policy asks acc 2 for a publish and acc 4 for a subscription, acc a JSON number', async (t) => {
  const svc = await service(flaskLike(accounts))
  const acl = createHttpAclPolicy(config(svc.url), silent)
  t.teardown(() => acl.close?.())
  t.same(await acl.decide(alice, 'publish', 'metrics/alice/Temperatura'), { allow: true })
  t.same(await acl.decide(alice, 'subscribe', 'metrics/alice/#'), { allow: true })
  t.match(await acl.decide(alice, 'publish', 'metrics/bob/Temperatura'), { allow: false })
  t.match(await acl.decide(alice, 'subscribe', '#'), { allow: false })
  t.same(svc.received.map((r) => r.fields), [
    { username: 'alice|123456', clientid: 'dev-1', topic: 'metrics/alice/Temperatura', acc: 2 },
    { username: 'alice|123456', clientid: 'dev-1', topic: 'metrics/alice/#', acc: 4 },
    { username: 'alice|123456', clientid: 'dev-1', topic: 'metrics/bob/Temperatura', acc: 2 },
    { username: 'alice|123456', clientid: 'dev-1', topic: '#', acc: 4 }
  ])
  t.ok(svc.received.every((r) => r.path === '/auth/acl' && r.method === 'POST'), 'every check goes to the ACL path: no superuser endpoint')
  const { mqttUsername: _, ...certOnly } = alice
  await acl.decide(certOnly, 'publish', 'x')
  t.equal(svc.received.at(-1)?.fields.username, 'alice', 'without an MQTT username the account name is sent')
})

t.test('$ topics are denied locally, and delivery is answered at once without asking', async (t) => {
  const svc = await service(() => ({ body: '{"Ok":true}' }))
  const acl = createHttpAclPolicy(config(svc.url), silent)
  t.teardown(() => acl.close?.())
  for (const [action, topic] of [['publish', '$SYS/x'], ['subscribe', '$SYS/#'], ['subscribe', '$share/g/t'], ['read', '$SYS/broker/uptime']] as const) {
    const d = acl.decide(alice, action, topic)
    t.notOk(d instanceof Promise, `${action} ${topic} answered synchronously`)
    t.match(d, { allow: false, reason: 'reserved $ topic' })
  }
  const read = acl.decide(alice, 'read', 'metrics/alice/Temperatura')
  t.same(read, { allow: true }, 'delivery follows the approved subscription, synchronously')
  t.match(acl.decide({ ...alice, clientId: 'dev#1' }, 'publish', 'x'), { allow: false }, 'a wildcard in the client id is refused as mosquitto does')
  t.equal(svc.hits(), 0, 'the service was never asked')
})

t.test('JSON answers are read like Go\'s decoder: keys case-insensitive, wrong types unreadable', async (t) => {
  let body = ''
  const svc = await service(() => ({ body }))
  const c = client(config(svc.url))
  const cases: Array<[string, boolean | 'fault']> = [
    ['{"Ok":true,"Error":""}', true], ['{"ok":true}', true], ['{"OK":true}', true], [' {"ok": true, "extra": [1]} ', true],
    ['{"Ok":false,"Error":"bad password"}', false], ['{}', false], ['null', false], ['{"ok":null}', false], ['{"ok":true,"Ok":false}', false],
    ['{"ok":"true"}', 'fault'], ['{"ok":1}', 'fault'], ['[true]', 'fault'], ['ok', 'fault'], ['', 'fault'], ['{"ok":true,"error":5}', 'fault']
  ]
  for (const [b, expected] of cases) {
    body = b
    if (expected === 'fault') await unavailable(t, c.checkUser('alice|123456', PASSWORD, 'dev-1'), JSON.stringify(b))
    else t.equal(await c.checkUser('alice|123456', PASSWORD, 'dev-1'), expected, JSON.stringify(b))
  }
})

t.test('a 3xx or 4xx is a "no" whatever the body says; a 5xx means the backend is unavailable', async (t) => {
  let status = 200
  const svc = await service(() => ({ status, body: '{"Ok":true}' }))
  for (const mode of ['json', 'status', 'text'] as const) {
    const c = client(config(svc.url, { responseMode: mode }))
    for (status of [301, 302, 400, 401, 403, 404]) {
      t.equal(await c.checkUser('alice|123456', PASSWORD, 'dev-1'), false, `${mode}: ${status} denies`)
    }
    for (status of [500, 502, 503]) {
      await unavailable(t, c.checkUser('alice|123456', PASSWORD, 'dev-1'), `${mode}: ${status} is a fault, never an allow`)
    }
  }
})

t.test('status mode allows any 2xx; text mode allows exactly "ok"', async (t) => {
  let reply: Reply = {}
  const svc = await service(() => reply)
  const status = client(config(svc.url, { responseMode: 'status' }))
  for (const s of [200, 201, 204]) {
    reply = { status: s, body: s === 204 ? '' : 'anything' }
    t.equal(await status.checkUser('alice|1', PASSWORD, 'c'), true, `status ${s} allows`)
  }
  const text = client(config(svc.url, { responseMode: 'text' }))
  for (const [b, expected] of [['ok', true], ['OK', false], ['ok\n', false], [' ok', false], ['denied', false], ['', false]] as const) {
    reply = { body: b }
    t.equal(await text.checkUser('alice|1', PASSWORD, 'c'), expected, `text ${JSON.stringify(b)}`)
  }
})

t.test('a backend slower than the timeout is unavailable, and the wait is bounded', async (t) => {
  let reply: Reply = { delayMs: 5000, body: '{"Ok":true}' }
  const svc = await service(() => reply)
  const c = client(config(svc.url, { timeout: 300 }))
  for (const r of [{ delayMs: 5000, body: '{"Ok":true}' }, { stall: true }]) {
    reply = r
    const start = Date.now()
    await unavailable(t, c.checkUser('alice|123456', PASSWORD, 'dev-1'), r.stall === true ? 'a body that never ends' : 'no headers in time')
    const took = Date.now() - start
    t.ok(took >= 280 && took < 1300, `gave up after ${took} ms (timeout 300)`)
  }
})

t.test('a backend that is down, hangs up or sends too much is unavailable', async (t) => {
  const down = client(config(`http://127.0.0.1:${await closedPort()}`))
  await unavailable(t, down.checkUser('alice|123456', PASSWORD, 'dev-1'), 'connection refused')
  const acl = createHttpAclPolicy(config(`http://127.0.0.1:${await closedPort()}`), silent)
  t.teardown(() => acl.close?.())
  await unavailable(t, Promise.resolve(acl.decide(alice, 'subscribe', 'metrics/alice/#')), 'ACL check against a closed port')
  let reply: Reply = { hangup: true }
  const svc = await service(() => reply)
  const c = client(config(svc.url))
  await unavailable(t, c.checkUser('alice|123456', PASSWORD, 'dev-1'), 'socket closed without an answer')
  reply = { body: `{"Ok":true,"Error":"${'x'.repeat(70_000)}"}` }
  await unavailable(t, c.checkUser('alice|123456', PASSWORD, 'dev-1'), 'a body over 64 KiB')
  const badName = client(config('http://no-such-host.invalid:5000'))
  await unavailable(t, badName.checkUser('alice|123456', PASSWORD, 'dev-1'), 'a name that does not resolve')
})

t.test('the authenticator refuses locally what it must not send, and never asks', async (t) => {
  const svc = await service(() => ({ body: '{"Ok":true}' }))
  const auth = createHttpAuthenticator(config(svc.url), silent)
  t.teardown(() => auth.close?.())
  t.same(await auth.login(req(undefined)), { ok: false, reason: 'anonymous' })
  t.same(await auth.login(req('')), { ok: false, reason: 'anonymous' })
  for (const u of ['a/b|123456', '+|123456', '#', '$SYS|1', 'a|b|123456', `${'x'.repeat(65)}|1`, '|123456', 'al ice']) {
    t.same(await auth.login(req(u)), { ok: false, reason: 'invalid_username' }, `${JSON.stringify(u)} is not a valid account`)
  }
  t.same(await auth.login(req('alice|123456', null)), { ok: false, reason: 'missing_password', user: 'alice' })
  t.same(await auth.login(req('alice|123456', '')), { ok: false, reason: 'missing_password', user: 'alice' })
  t.equal(svc.hits(), 0, 'nothing reached the service')
  t.same(await auth.login(req('alice')), { ok: true, user: 'alice' }, 'a name without | is the account, sent as it is')
  t.equal(svc.received[0]?.fields.username, 'alice')
})

t.test('a positive answer is reused within the TTL; a "no" and another password are asked again', async (t) => {
  const svc = await service(flaskLike(accounts))
  const c = client(config(svc.url, { cacheTtl: 1 }))
  const auth = createHttpAuthenticator(config(svc.url), silent, c)
  t.same(await auth.login(req('alice|123456')), { ok: true, user: 'alice' })
  t.same(await auth.login(req('alice|123456')), { ok: true, user: 'alice' })
  t.equal(svc.hits('/auth/user'), 1, 'the second login was served from the cache')
  t.match(await auth.login(req('alice|123456', 'wrong password')), { ok: false, reason: 'backend_denied' })
  t.equal(svc.hits('/auth/user'), 2, 'another password is not served from the entry of the right one')
  t.match(await auth.login(req('alice|123456', 'wrong password')), { ok: false, reason: 'backend_denied' })
  t.equal(svc.hits('/auth/user'), 3, 'a "no" is not cached')
  t.match(await auth.login({ ...req('alice|123456'), clientId: 'dev-2' }), { ok: true })
  t.equal(svc.hits('/auth/user'), 4, 'another client id is asked again')
  const acl = createHttpAclPolicy(config(svc.url), silent, c)
  await acl.decide(alice, 'publish', 'metrics/alice/Temperatura')
  await acl.decide(alice, 'publish', 'metrics/alice/Temperatura')
  await acl.decide(alice, 'subscribe', 'metrics/alice/Temperatura')
  t.equal(svc.hits('/auth/acl'), 2, 'an allowed publish is cached; the same topic with acc 4 is not that entry')
  await new Promise((resolve) => setTimeout(resolve, 1100))
  await auth.login(req('alice|123456'))
  t.equal(svc.hits('/auth/user'), 5, 'after the TTL the service is asked again')
})

t.test('an outage is logged once and its recovery once, without the password', async (t) => {
  let reply: Reply = { hangup: true }
  const svc = await service(() => reply)
  const { log, lines, text } = logger()
  const c = client(config(svc.url), log)
  const auth = createHttpAuthenticator(config(svc.url), log, c)
  const acl = createHttpAclPolicy(config(svc.url), log, c)
  for (let i = 0; i < 3; i++) await unavailable(t, auth.login(req('alice|123456')), `login ${i + 1}`)
  await unavailable(t, Promise.resolve(acl.decide(alice, 'publish', 'metrics/alice/Temperatura')), 'ACL check')
  t.equal(lines.filter((l) => l.event === 'backend.unavailable').length, 1, 'one warning for four failures')
  t.match(lines.find((l) => l.event === 'backend.unavailable'), { level: 40, backend: 'http' })
  reply = { body: '{"Ok":true}' }
  for (let i = 0; i < 3; i++) t.same(await auth.login(req('alice|123456')), { ok: true, user: 'alice' })
  t.equal(lines.filter((l) => l.event === 'backend.recovered').length, 1, 'one recovery for three answers')
  t.match(lines.find((l) => l.event === 'backend.recovered'), { level: 30, backend: 'http' })
  reply = { hangup: true }
  await unavailable(t, auth.login(req('alice|123456')), 'a second outage')
  t.equal(lines.filter((l) => l.event === 'backend.unavailable').length, 2, 'a new outage is logged again')
  t.notOk(text().includes(PASSWORD), 'the password never reaches the log')
  t.notOk(text().includes('123456'), 'nor the code')
})

t.test('an https backend is verified against the configured CA file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-http-ca-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const certs = await initCertificates({ outDir: dir })
  const svc = await startGoAuthService(() => ({ body: '{"Ok":true}' }), { cert: readFileSync(certs.serverCert), key: readFileSync(certs.serverKey) })
  services.push(svc)
  t.equal(await client(config(svc.url, { ca: certs.caCert })).checkUser('alice|1', PASSWORD, 'c'), true, 'trusted through the CA')
  await unavailable(t, client(config(svc.url)).checkUser('alice|1', PASSWORD, 'c'), 'an unknown CA')
  t.throws(() => createGoAuthClient(config(svc.url, { ca: join(dir, 'missing.crt') }), silent), { code: 'BASTION_ERR_CONFIG' })
})
