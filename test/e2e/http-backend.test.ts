// The whole broker against a go-auth-contract HTTP service: real TLS, mqtt.js v5 and 3.1.1,
// CONNACK / PUBACK / SUBACK codes for allow, deny and a backend that cannot answer.
import t from 'tap'
import { closedPort, flaskLike, startGoAuthService, type GoAuthService, type Received, type Reply } from '../helpers/go-auth-service.js'
import { events, nextMessage, PASSWORD, pubackCode, startHarness, subackCode, type Harness } from '../helpers/harness.js'

const accounts = {
  alice: { password: PASSWORD, code: '123456', publish: ['metrics/alice/Temperatura'], subscribe: ['metrics/alice/#'] },
  bob: { password: PASSWORD, code: '654321', publish: [], subscribe: [] }
}

// What the service does right now: answer like the Flask app, or misbehave.
let trouble: Reply | undefined
function answer (mode: 'json' | 'status' | 'text' = 'json'): (r: Received) => Reply {
  const flask = flaskLike(accounts, mode)
  return (r) => trouble ?? flask(r)
}

async function broker (svc: { url: string }, store: Record<string, unknown> = {}): Promise<Harness> {
  return await startHarness({
    auth: { store: { type: 'http', url: svc.url, timeout: 500, ...store } },
    acl: { policy: 'http' }
  })
}

const svc: GoAuthService = await startGoAuthService(answer())
const h = await broker(svc)
t.teardown(async () => {
  await h.close()
  await svc.close()
})

const alice = { username: 'alice|123456', password: PASSWORD }

t.test('a login the service accepts gets CONNACK 0 over TLS, the username sent verbatim', async (t) => {
  const c = await h.connect('alice', { ...alice, clientId: 'alice-dev' })
  t.equal(c.connected, true)
  const r = svc.received.find((x) => x.path === '/auth/user' && x.fields.clientid === 'alice-dev')
  t.same(r?.fields, { username: 'alice|123456', password: PASSWORD, clientid: 'alice-dev' })
  t.match(events(h, 'login.ok').at(-1), { user: 'alice', clientId: 'alice-dev' })
  await c.endAsync()
})

t.test('a login the service refuses gets 0x86 (v5) and 4 (3.1.1)', async (t) => {
  t.equal(await h.refused({ username: 'alice|000000', password: PASSWORD }), 0x86)
  t.equal(await h.refused({ username: 'alice|000000', password: PASSWORD, protocolVersion: 4 }), 4)
  t.equal(await h.refused({ username: 'bob|654321', password: 'wrong' }), 0x86)
  t.match(events(h, 'login.failed').at(-1), { reason: 'backend_denied', user: 'bob' })
})

t.test('a service that hangs up or is too slow gets 0x88 (v5) and 3 (3.1.1)', async (t) => {
  t.teardown(() => { trouble = undefined })
  for (const [what, reply] of [['hangs up', { hangup: true }], ['is slower than the timeout', { delayMs: 3000, body: '{"Ok":true}' }]] as const) {
    trouble = reply
    const start = Date.now()
    t.equal(await h.refused(alice), 0x88, `${what}: v5`)
    t.ok(Date.now() - start < 2500, `${what}: refused within the timeout and a margin`)
    t.equal(await h.refused({ ...alice, protocolVersion: 4 }), 3, `${what}: 3.1.1`)
    t.equal(events(h, 'login.failed').at(-1)?.reason, 'backend_unavailable')
  }
  trouble = undefined
  const c = await h.connect('alice', alice)
  t.equal(c.connected, true, 'logins work again once the service answers')
  await c.endAsync()
})

t.test('a service that is down gets 0x88 (v5) and 3 (3.1.1)', async (t) => {
  const down = await broker({ url: `http://127.0.0.1:${await closedPort()}` })
  t.teardown(() => down.close())
  t.equal(await down.refused(alice), 0x88)
  t.equal(await down.refused({ ...alice, protocolVersion: 4 }), 3)
  t.equal(events(down, 'backend.unavailable').length, 1, 'the outage is logged once')
})

t.test('publishes and subscriptions follow the service: PUBACK 0 / 0x87, SUBACK granted / 0x87', async (t) => {
  const sub = await h.connect('alice', { ...alice, clientId: 'alice-dash' })
  const pub = await h.connect('alice', { ...alice, clientId: 'alice-pub' })
  t.equal(await subackCode(sub, 'metrics/alice/#'), 1, 'an allowed filter is granted')
  t.equal(await subackCode(sub, 'metrics/#'), 0x87, 'a refused filter gets 0x87')
  t.equal(await subackCode(sub, '$SYS/#'), 0x87, '$SYS is refused without asking')
  const got = nextMessage(sub)
  t.equal(await pubackCode(pub, 'metrics/alice/Temperatura', '22.5'), 0, 'an allowed publish gets PUBACK 0')
  t.equal((await got)?.topic, 'metrics/alice/Temperatura', 'and is delivered to the approved subscription')
  t.equal(await pubackCode(pub, 'metrics/alice/Humedad', 'x'), 0x87, 'a refused publish gets 0x87')
  t.match(events(h, 'acl.denied').at(-1), { user: 'alice', action: 'publish', topic: 'metrics/alice/Humedad' })
  const acl = svc.received.filter((r) => r.path === '/auth/acl')
  t.match(acl.find((r) => r.fields.topic === 'metrics/alice/#'), { fields: { username: 'alice|123456', clientid: 'alice-dash', acc: 4 } })
  t.match(acl.find((r) => r.fields.topic === 'metrics/alice/Temperatura'), { fields: { username: 'alice|123456', clientid: 'alice-pub', acc: 2 } })
  t.notOk(acl.some((r) => String(r.fields.topic).startsWith('$')), 'the service never saw a $ topic')
  t.notOk(acl.some((r) => r.fields.acc === 1), 'delivery is not asked per message')
  await pub.endAsync()
  await sub.endAsync()
})

t.test('an ACL check the service cannot answer is a refusal, never an allow', async (t) => {
  const c = await h.connect('alice', { ...alice, clientId: 'alice-fault' })
  t.teardown(() => { trouble = undefined })
  trouble = { hangup: true }
  t.equal(await pubackCode(c, 'metrics/alice/Temperatura', 'x'), 0x87)
  t.equal(await subackCode(c, 'metrics/alice/#'), 0x87)
  trouble = undefined
  await c.endAsync()
})

t.test('the broker log never carries the password or the code', async (t) => {
  const text = JSON.stringify(h.logs)
  t.notOk(text.includes(PASSWORD))
  t.notOk(text.includes('123456'))
})

t.test('a form-mode service with status answers works the same way', async (t) => {
  const form = await startGoAuthService(answer('status'))
  const fh = await broker(form, { paramsMode: 'form', responseMode: 'status' })
  t.teardown(async () => {
    await fh.close()
    await form.close()
  })
  const c = await fh.connect('alice', { ...alice, clientId: 'alice-form' })
  t.equal(c.connected, true, 'CONNACK 0')
  t.equal(await fh.refused({ username: 'alice|000000', password: PASSWORD }), 0x86)
  t.equal(await pubackCode(c, 'metrics/alice/Temperatura', '1'), 0)
  t.equal(await pubackCode(c, 'metrics/bob/Temperatura', '1'), 0x87)
  t.equal(await subackCode(c, 'metrics/alice/#'), 1)
  t.equal(await subackCode(c, '#'), 0x87)
  const user = form.received.find((r) => r.path === '/auth/user')
  t.equal(user?.headers['content-type'], 'application/x-www-form-urlencoded')
  t.same(user?.fields, { username: 'alice|123456', password: PASSWORD, clientid: 'alice-form' })
  t.same(form.received.find((r) => r.path === '/auth/acl')?.fields, { username: 'alice|123456', clientid: 'alice-form', topic: 'metrics/alice/Temperatura', acc: '2' })
  await c.endAsync()
})
