// MQTT over secure WebSockets: mqtt.js over wss:// gets the same login, ACL and log lines as over
// TLS; the upgrade is refused with a plain HTTP status for a foreign Origin, another path, no
// `mqtt` subprotocol or no upgrade at all, and a client without TLS gets nothing.
import t from 'tap'
import { request, type RequestOptions } from 'node:https'
import { connect as netConnect } from 'node:net'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { events, nextMessage, PASSWORD, pubackCode, startHarness, subackCode } from '../helpers/harness.js'

const APP = 'https://app.example.com'
const h = await startHarness({
  auth: { totp: { replayProtection: false } },
  listeners: [
    { type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', ca: 'certs/ca.crt' },
    { type: 'wss', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', origins: [APP] }
  ]
})
t.teardown(() => h.close())
await h.addUser('alice')
await h.addUser('bob')
const wssPort = h.bastion.listeners[1]?.port as number
const clients: MqttClient[] = []
t.teardown(async () => { await Promise.all(clients.map(async (c) => await c.endAsync(true).catch(() => {}))) })

const wssOptions = (o: IClientOptions & { wsOptions?: Record<string, unknown> } = {}): IClientOptions => ({
  protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, ca: h.ca, rejectUnauthorized: true, ...o,
  // mqtt.js hands wsOptions to ws, and ws hands them to tls.connect (servername) and the request (origin).
  wsOptions: { servername: 'localhost', ...o.wsOptions }
})

async function wss (name: string, o: IClientOptions & { offset?: number; wsOptions?: Record<string, unknown> } = {}): Promise<MqttClient> {
  const { offset, ...rest } = o
  const c = await mqtt.connectAsync(`wss://127.0.0.1:${wssPort}/mqtt`, wssOptions({ username: `${name}|${h.code(name, offset)}`, password: PASSWORD, ...rest }))
  clients.push(c)
  return c
}

/** Connects over wss expecting no session: the CONNACK code, or the transport error's message. */
function wssRefused (o: IClientOptions & { wsOptions?: Record<string, unknown> }, url = `wss://127.0.0.1:${wssPort}/mqtt`): Promise<number | string> {
  return new Promise((resolve) => {
    const c = mqtt.connect(url, wssOptions(o))
    clients.push(c)
    // mqtt.js reports a refused upgrade only as its stream's error, then closes.
    let transport = 'closed'
    c.stream.on('error', (err: Error) => { transport = err.message })
    c.on('connect', () => { c.end(true); resolve('connected') })
    c.on('error', (err: any) => { c.end(true); resolve(typeof err.code === 'number' ? err.code : String(err.message)) })
    c.on('close', () => resolve(transport))
  })
}

/** A hand-made upgrade request: resolves with the HTTP status (101 when upgraded, then closed). */
function upgrade (o: { path?: string; headers?: Record<string, string>; method?: string; noUpgrade?: boolean } & Partial<RequestOptions> = {}): Promise<number> {
  const { path = '/mqtt', headers = {}, noUpgrade = false, ...rest } = o
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port: wssPort, path, ca: h.ca, servername: 'localhost', agent: false,
      headers: noUpgrade
        ? headers
        : { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Protocol': 'mqtt', ...headers },
      ...rest
    })
    req.setTimeout(5000, () => req.destroy(new Error('no answer within 5 s')))
    req.on('upgrade', (res, socket) => { socket.destroy(); resolve(res.statusCode ?? 0) })
    req.on('response', (res) => { res.resume(); resolve(res.statusCode ?? 0) })
    req.on('error', reject)
    req.end()
  })
}

const refusals = (reason: string): Array<Record<string, any>> => events(h, 'wss.refused').filter((e) => e.reason === reason)

t.test('mqtt.js over wss:// logs in with user|code and password, and its metric reaches a subscriber over TLS', async (t) => {
  const sub = await h.connect('alice', { clientId: 'alice-dash' })
  await sub.subscribeAsync('metrics/alice/#', { qos: 1 })
  const dev = await wss('alice', { clientId: 'alice-ws', offset: 1 })
  t.match(events(h, 'login.ok').find((e) => e.clientId === 'alice-ws'), { user: 'alice', remote: '127.0.0.1', protocol: 5 }, 'login.ok with the peer address')
  const got = nextMessage(sub)
  t.equal(await pubackCode(dev, 'metrics/alice/Temperatura', '{"value":21.5}'), 0, 'PUBACK success')
  t.match(await got, { topic: 'metrics/alice/Temperatura', payload: '{"value":21.5}' }, 'delivered over TLS')
})

t.test('a subscriber over wss receives what a device publishes over TLS', async (t) => {
  const dash = await wss('bob', { clientId: 'bob-ws-dash' })
  t.equal(await subackCode(dash, 'metrics/bob/#'), 1, 'SUBACK QoS 1')
  const dev = await h.connect('bob', { clientId: 'bob-dev', offset: 1 })
  const got = nextMessage(dash)
  await dev.publishAsync('metrics/bob/Humedad', '41', { qos: 1 })
  t.match(await got, { topic: 'metrics/bob/Humedad', payload: '41' })
  await dev.endAsync()
})

t.test('outside its branch over wss: PUBACK and SUBACK 0x87, logged as over TLS, and the connection stays up', async (t) => {
  await h.freshStep()
  const c = await wss('bob', { clientId: 'bob-ws-pub', offset: -1 })
  t.equal(await pubackCode(c, 'metrics/alice/Temperatura', 'x'), 0x87, 'another user\'s branch')
  t.equal(await pubackCode(c, 'metrics/bob/Presion', 'x'), 0x87, 'a leaf not configured')
  t.equal(await subackCode(c, 'metrics/#'), 0x87, 'a filter reaching other branches')
  t.match(events(h, 'acl.denied').filter((e) => e.clientId === 'bob-ws-pub'), [
    { user: 'bob', action: 'publish', topic: 'metrics/alice/Temperatura', remote: '127.0.0.1' },
    { user: 'bob', action: 'subscribe', topic: 'metrics/#' }
  ], 'one line per action, with the peer address')
  t.equal(await pubackCode(c, 'metrics/bob/Estado', 'on'), 0, 'its own branch still works')
  t.equal(c.connected, true)
})

t.test('a wrong password over wss gets CONNACK 0x86 and login.failed names the real peer address', async (t) => {
  const code = await wssRefused({ clientId: 'alice-wrong', username: `alice|${h.code('alice')}`, password: 'not the password', wsOptions: { localAddress: '127.0.0.3' } })
  t.equal(code, 0x86)
  const line = events(h, 'login.failed').find((e) => e.clientId === 'alice-wrong')
  t.match(line, { reason: 'bad_password', remote: '127.0.0.3' })
  t.notMatch(JSON.stringify(h.logs), /not the password/, 'the password is in no log line')
})

t.test('a browser Origin must be listed: a listed one logs in, any other is refused with 403 before MQTT', async (t) => {
  await h.freshStep()
  const c = await wss('alice', { clientId: 'alice-browser', offset: -1, wsOptions: { origin: APP } })
  t.equal(c.connected, true, 'the listed Origin')
  for (const origin of ['https://evil.example', `${APP}.evil.example`, 'http://app.example.com', `${APP}:443`, 'null', '']) {
    t.equal(await upgrade({ headers: { Origin: origin } }), 403, `Origin "${origin}" refused`)
  }
  t.equal(await upgrade({ headers: { 'Sec-WebSocket-Origin': 'https://evil.example' } }), 403, 'the old drafts\' Sec-WebSocket-Origin too')
  const before = events(h, 'login.failed').length + events(h, 'login.ok').length
  t.match(await wssRefused({ clientId: 'alice-evil', username: `alice|${h.code('alice')}`, password: PASSWORD, wsOptions: { origin: 'https://evil.example' } }), /403/, 'mqtt.js is told 403')
  t.equal(events(h, 'login.failed').length + events(h, 'login.ok').length, before, 'no login was attempted')
  t.match(refusals('origin')[0], { event: 'wss.refused', remote: '127.0.0.1', status: 403, origin: 'https://evil.example' })
  t.equal(refusals('origin').length, 1, 'logged once for this address and minute')
  t.equal(await upgrade({}), 101, 'no Origin (devices, native clients): upgraded')
})

t.test('another path gets 404, no mqtt subprotocol 400, and a request without upgrade 426 / 404', async (t) => {
  t.equal(await upgrade({ path: '/' }), 404)
  t.equal(await upgrade({ path: '/mqtt/' }), 404)
  t.equal(await upgrade({ path: '/MQTT' }), 404)
  t.equal(await upgrade({ path: '/mqtt?token=x' }), 101, 'a query string is not part of the path')
  t.match(await wssRefused({ username: 'x', password: 'y' }, `wss://127.0.0.1:${wssPort}/ws`), /404/, 'mqtt.js at another path')
  t.equal(await upgrade({ headers: { 'Sec-WebSocket-Protocol': 'mqttv3.1' } }), 400, 'another subprotocol only')
  t.equal(await upgrade({ headers: { 'Sec-WebSocket-Protocol': 'chat, superchat' } }), 400)
  t.equal(await upgrade({ headers: { 'Sec-WebSocket-Protocol': 'chat, mqtt' } }), 101, 'mqtt among others')
  const bare = await upgrade({ headers: { 'Sec-WebSocket-Protocol': '' } })
  t.equal(bare, 400, 'an empty subprotocol list')
  t.equal(await upgrade({ headers: { 'Sec-WebSocket-Version': '7' } }), 400, 'what ws refuses itself is refused too')
  t.equal(await upgrade({ noUpgrade: true }), 426, 'GET /mqtt without upgrade')
  t.equal(await upgrade({ noUpgrade: true, path: '/index.html' }), 404)
  t.equal(await upgrade({ noUpgrade: true, method: 'POST' }), 426)
  t.match(refusals('path')[0], { status: 404, path: '/' })
  t.equal(await upgrade({ path: '/other?token=s3cret', localAddress: '127.0.0.9' }), 404)
  t.match(refusals('path').find((e) => e.remote === '127.0.0.9'), { path: '/other' }, 'the path is logged without its query')
  t.notMatch(JSON.stringify(h.logs), /s3cret/, 'a token in a query string is in no log line')
  t.ok(refusals('subprotocol').length >= 1 && refusals('not_upgrade').length >= 1 && refusals('bad_handshake').length >= 1, 'each reason logged')
})

t.test('a client without TLS gets no HTTP and no MQTT answer', async (t) => {
  const answer = await new Promise<string>((resolve) => {
    const s = netConnect({ host: '127.0.0.1', port: wssPort }, () => {
      s.write('GET /mqtt HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n')
    })
    let got = ''
    s.setTimeout(5000, () => { s.destroy(); resolve(`timeout: ${got}`) })
    s.on('data', (d: Buffer) => { got += d.toString('latin1') })
    s.on('close', () => resolve(got))
    s.on('error', () => {})
  })
  t.notMatch(answer, /HTTP\/1\.1/, 'no HTTP answer')
  t.notMatch(answer, /^timeout/, 'closed at once')
  t.notSame(await wssRefused({ username: 'x', password: 'y' }, `ws://127.0.0.1:${wssPort}/mqtt`), 'connected', 'mqtt.js over ws:// fails')
  t.ok(events(h, 'tls.handshake_failed').length >= 1, 'logged as a failed TLS handshake')
})

t.test('a broker with only a wss listener: logs in, publishes in its branch, is refused outside it', async (t) => {
  const only = await startHarness({
    auth: { totp: { replayProtection: false } },
    listeners: [{ type: 'wss', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key' }]
  })
  t.teardown(() => only.close())
  await only.addUser('carol')
  t.same(only.bastion.listeners.map((l) => l.type), ['wss'], 'no tls listener was needed')
  const port = only.bastion.listeners[0]?.port as number
  const c = await mqtt.connectAsync(`wss://127.0.0.1:${port}/mqtt`, { ...wssOptions({ username: `carol|${only.code('carol')}`, password: PASSWORD }), ca: only.ca })
  clients.push(c)
  t.equal(await pubackCode(c, 'metrics/carol/Temperatura', '{"value":20}'), 0, 'in its branch')
  t.equal(await pubackCode(c, 'metrics/alice/Temperatura', '{"value":20}'), 0x87, 'outside it')
  t.match(events(only, 'acl.denied')[0], { user: 'carol', topic: 'metrics/alice/Temperatura' })
})
