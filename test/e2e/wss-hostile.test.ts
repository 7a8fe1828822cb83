// Hostile WebSocket clients: frames past the packet limit, a flood of refused upgrades from
// several addresses, prototype names in the request, and a client that never sends its
// upgrade. Each costs its own connection only, and the log stays bounded.
import t from 'tap'
import { request } from 'node:https'
import { connect as tlsConnect } from 'node:tls'
import mqtt, { type MqttClient } from 'mqtt'
import WebSocket from 'ws'
import { events, PASSWORD, pubackCode, startHarness } from '../helpers/harness.js'

const MAX_PACKET = 1024
const h = await startHarness({
  auth: { totp: { replayProtection: false } },
  limits: { maxPacketSize: MAX_PACKET, tlsHandshakeTimeout: 1 },
  listeners: [
    { type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', ca: 'certs/ca.crt' },
    { type: 'wss', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', origins: ['https://app.example.com'] }
  ]
})
t.teardown(() => h.close())
await h.addUser('alice')
const wssPort = h.bastion.listeners[1]?.port as number
const url = `wss://127.0.0.1:${wssPort}/mqtt`
const clients: MqttClient[] = []
t.teardown(async () => { await Promise.all(clients.map(async (c) => await c.endAsync(true).catch(() => {}))) })

async function wss (clientId: string): Promise<MqttClient> {
  const c = await mqtt.connectAsync(url, {
    protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, clientId, username: `alice|${h.code('alice')}`, password: PASSWORD,
    ca: h.ca, rejectUnauthorized: true, wsOptions: { servername: 'localhost' }
  })
  clients.push(c)
  return c
}

/** A raw WebSocket with the mqtt subprotocol; resolves once open. */
function socket (): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['mqtt'], { ca: h.ca, servername: 'localhost' })
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
  })
}

const closeCode = (ws: WebSocket): Promise<number> => new Promise((resolve) => { ws.once('close', (code) => resolve(code)) })

/** Status of one upgrade request with `headers`, from `localAddress`. */
function upgrade (headers: Record<string, string>, o: { path?: string; localAddress?: string } = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({
      host: '127.0.0.1', port: wssPort, path: o.path ?? '/mqtt', ca: h.ca, servername: 'localhost', agent: false,
      ...(o.localAddress === undefined ? {} : { localAddress: o.localAddress }),
      headers: { Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13', 'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Protocol': 'mqtt', ...headers }
    })
    req.setTimeout(5000, () => req.destroy(new Error('no answer within 5 s')))
    req.on('upgrade', (res, s) => { s.destroy(); resolve(res.statusCode ?? 0) })
    req.on('response', (res) => { res.resume(); resolve(res.statusCode ?? 0) })
    req.on('error', reject)
    req.end()
  })
}

const refusals = (reason: string): Array<Record<string, any>> => events(h, 'wss.refused').filter((e) => e.reason === reason)

t.test('a WebSocket message bigger than the packet limit closes that connection (1009) and no other', async (t) => {
  const bystander = await wss('alice-bystander')
  const big = await socket()
  const closed = closeCode(big)
  big.send(Buffer.alloc(MAX_PACKET + 1))
  t.equal(await closed, 1009, 'one frame past maxPacketSize: 1009 message too big')
  const fragmented = await socket()
  const closed2 = closeCode(fragmented)
  // One message in three fragments: the limit holds for the whole message.
  for (const fin of [false, false, true]) fragmented.send(Buffer.alloc(400), { fin })
  t.equal(await closed2, 1009, 'a fragmented message past the limit too')
  t.equal(events(h, 'login.ok').filter((e) => e.clientId !== 'alice-bystander').length, 0, 'nothing reached the login')
  // Longer than the upgrade deadline (limits.tlsHandshakeTimeout: 1 s): it ends at the upgrade.
  await new Promise((resolve) => setTimeout(resolve, 1500))
  t.equal(bystander.connected, true, 'the other connection is untouched')
  t.equal(await pubackCode(bystander, 'metrics/alice/Temperatura', '20'), 0, 'and still publishes')
  t.equal(await pubackCode(bystander, 'metrics/alice/Estado', 'x'.repeat(900)), 0, 'a packet near the limit passes')
})

t.test('50 upgrades with a foreign Origin from 5 addresses: all refused, one line per address, the broker still serves', async (t) => {
  const before = refusals('origin').length
  const addresses = ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5', '127.0.0.6']
  const statuses: number[] = []
  // 10 rounds of one request per address at once: bounded in count and in concurrency.
  for (let round = 0; round < 10; round++) {
    statuses.push(...await Promise.all(addresses.map(async (a, i) => await upgrade({ Origin: `https://evil${round}-${i}.example` }, { localAddress: a }))))
  }
  t.equal(statuses.length, 50)
  t.ok(statuses.every((s) => s === 403), 'every one refused with 403')
  const lines = refusals('origin').slice(before)
  t.equal(lines.length, addresses.length, 'one line per address and minute')
  t.same(lines.map((l) => l.remote).sort(), addresses, 'each with its address')
  const c = await wss('alice-after-flood')
  t.equal(await pubackCode(c, 'metrics/alice/Humedad', '40'), 0, 'a device still logs in and publishes')
})

t.test('prototype names as path, Origin or subprotocol are refused like any other', async (t) => {
  for (const p of ['/__proto__', '/constructor', '/mqtt/__proto__']) t.equal(await upgrade({}, { path: p }), 404, `path ${p}`)
  for (const o of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) t.equal(await upgrade({ Origin: o }), 403, `Origin ${o}`)
  t.equal(await upgrade({ 'Sec-WebSocket-Protocol': '__proto__' }), 400, 'subprotocol __proto__')
  // Computed: a literal "__proto__" key would set the object's prototype instead of a header.
  t.equal(await upgrade({ ['__proto__']: 'x', Origin: 'https://app.example.com' }), 101, 'a __proto__ header beside a listed Origin changes nothing')
  const c = await wss('alice-after-proto')
  t.equal(c.connected, true, 'the broker still serves')
})

t.test('a client that never finishes its upgrade request is closed at the deadline', async (t) => {
  const started = Date.now()
  const elapsed = await new Promise<number>((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: wssPort, ca: h.ca, servername: 'localhost' }, () => {
      // Headers sent one at a time and never ended (slowloris).
      s.write('GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n')
    })
    // Closed by the broker, not by this guard: without the deadline it would stay open for good.
    const guard = setTimeout(() => { s.destroy(); reject(new Error('still open after 30 s')) }, 30_000)
    s.on('close', () => { clearTimeout(guard); resolve(Date.now() - started) })
    s.on('error', () => {})
  })
  t.ok(elapsed >= 900, `closed after ${elapsed} ms, not before the 1 s deadline`)
  const quiet = Date.now()
  const silent = await new Promise<number>((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: wssPort, ca: h.ca, servername: 'localhost' })
    const guard = setTimeout(() => { s.destroy(); reject(new Error('still open after 8 s')) }, 8000)
    s.on('close', () => { clearTimeout(guard); resolve(Date.now() - quiet) })
    s.on('error', () => {})
  })
  t.ok(silent >= 900 && silent < 5000, 'a client that sends nothing after TLS is closed too')
  t.match(refusals('upgrade_timeout')[0], { event: 'wss.refused', remote: '127.0.0.1' })
  t.equal(refusals('upgrade_timeout').length, 1, 'once per address and minute')
})
