// A broker behind a trusted proxy (listeners[].proxyProtocol): the device's address from the
// PROXY header is the one logged, locked out and counted; anyone else is refused. The "proxy"
// here is the test itself writing a v2 (or v1) header on 127.0.0.1, then TLS and MQTT 5.
import t from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import { MqttClient, type IClientOptions } from 'mqtt'
import { Command, INETProtocol, IPv4Address, IPv4ProxyAddress, Peer, TransportProtocol, V1ProxyProtocol, V2ProxyProtocol } from 'proxy-protocol-js'
import { events, PASSWORD, pubackCode, startHarness, type Harness } from '../helpers/harness.js'

const PROXY = ['127.0.0.1']

function v2Header (claimed: string, port: number): Buffer {
  return Buffer.from(new V2ProxyProtocol(Command.PROXY, TransportProtocol.STREAM, new IPv4ProxyAddress(
    IPv4Address.createFrom(claimed.split('.').map(Number)), port, IPv4Address.createFrom([127, 0, 0, 1]), 8883)).build())
}

type Outcome = { connected: MqttClient } | { refused: number } | { closed: true }

/**
 * An MQTT 5 client whose TCP connection (from `localAddress`) opens with `header`, then TLS
 * (or plain MQTT with `plain`). Resolves with the login, the CONNACK refusal, or a close
 * before any CONNACK (bounded: 10 s).
 */
async function login (h: Harness, header: Buffer | undefined, opts: IClientOptions & { localAddress?: string; plain?: boolean; port?: number } = {}): Promise<Outcome> {
  const { localAddress = '127.0.0.1', plain = false, port = h.port, ...o } = opts
  const client = new MqttClient(() => {
    const raw = net.connect({ host: '127.0.0.1', port, localAddress })
    raw.on('error', () => {})
    if (header !== undefined) raw.write(header)
    return plain ? raw : tls.connect({ socket: raw, ca: h.ca, servername: 'localhost' })
  }, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 10_000, password: PASSWORD, ...o })
  return await new Promise((resolve) => {
    const done = (outcome: Outcome): void => {
      clearTimeout(timer)
      client.removeAllListeners('close')
      if (!('connected' in outcome)) client.end(true)
      resolve(outcome)
    }
    const timer = setTimeout(() => done({ closed: true }), 10_000)
    client.on('connect', () => done({ connected: client }))
    client.on('error', (err: any) => { if (typeof err.code === 'number') done({ refused: err.code }) })
    client.on('close', () => done({ closed: true }))
  })
}

async function waitFor (h: Harness, event: string, count = 1): Promise<void> {
  for (let i = 0; i < 50 && events(h, event).length < count; i++) await new Promise((resolve) => setTimeout(resolve, 100))
}

function proxiedHarness (extra: Record<string, unknown> = {}): Promise<Harness> {
  return startHarness({
    listeners: [
      { type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', ca: 'certs/ca.crt', proxyProtocol: { trusted: PROXY } },
      { type: 'tcp', host: '127.0.0.1', port: 0, proxyProtocol: { trusted: PROXY } }
    ],
    ...extra
  })
}

t.test('a device behind a trusted proxy logs in under the address its PROXY header gives', async (t) => {
  const h = await proxiedHarness()
  t.teardown(() => h.close())
  await h.addUser('alice')
  const started = events(h, 'listener.started')
  t.match(started, [{ type: 'tls', proxyProtocol: { trusted: ['127.0.0.1/32'] } }, { type: 'tcp', proxyProtocol: { trusted: ['127.0.0.1/32'] } }])

  const o = await login(h, v2Header('203.0.113.7', 40001), { username: `alice|${h.code('alice')}` })
  t.ok('connected' in o, 'TLS and MQTT went through after the header')
  if (!('connected' in o)) return
  t.equal(await pubackCode(o.connected, 'metrics/alice/Temperatura', '{"value":1}'), 0, 'and the session works')
  t.match(events(h, 'login.ok'), [{ user: 'alice', remote: '203.0.113.7' }])
  t.notOk(h.logs.some((l) => l.remote === '127.0.0.1'), 'the proxy\'s own address is in no line')
  o.connected.end(true)
  await waitFor(h, 'client.unclean_disconnect')
  t.match(events(h, 'client.unclean_disconnect'), [{ user: 'alice', remote: '203.0.113.7' }])

  // The plain listener takes v1 and hands the CONNECT after the header to the broker.
  const v1 = Buffer.from(new V1ProxyProtocol(INETProtocol.TCP4, new Peer('198.51.100.4', 40002), new Peer('127.0.0.1', 1883)).build())
  const p = await login(h, v1, { plain: true, port: h.bastion.listeners[1]?.port as number, username: `alice|${h.code('alice', 1)}` })
  t.ok('connected' in p, 'plain MQTT behind a v1 header')
  if ('connected' in p) await p.connected.endAsync()
  t.match(events(h, 'login.ok')[1], { user: 'alice', remote: '198.51.100.4' })
})

t.test('failed logins behind the proxy lock out the address in the header, not the proxy', async (t) => {
  const h = await proxiedHarness({ auth: { lockout: { window: 60, maxFailuresPerUser: 0, maxFailuresPerIp: 3, duration: 60, maxDuration: 60 } } })
  t.teardown(() => h.close())
  await h.addUser('alice')
  for (let i = 0; i < 3; i++) {
    t.same(await login(h, v2Header('203.0.113.7', 41000 + i), { username: `alice|${h.code('alice')}`, password: 'wrong password' }), { refused: 0x86 }, `guess ${i + 1}`)
  }
  t.match(events(h, 'login.failed'), [{ reason: 'bad_password', remote: '203.0.113.7' }], 'fail2ban reads the device address')
  t.match(events(h, 'auth.lockout'), [{ scope: 'ip', remote: '203.0.113.7', failures: 3 }])

  t.same(await login(h, v2Header('203.0.113.7', 41010), { username: `alice|${h.code('alice')}` }), { closed: true }, 'the locked address is closed before TLS')
  t.match(events(h, 'connection.locked_out'), [{ remote: '203.0.113.7' }])

  const other = await login(h, v2Header('203.0.113.8', 41011), { username: `alice|${h.code('alice')}` })
  t.ok('connected' in other, 'another device behind the same proxy still logs in')
  if ('connected' in other) await other.connected.endAsync()
  t.match(events(h, 'login.ok'), [{ user: 'alice', remote: '203.0.113.8' }])
})

t.test('an untrusted peer is refused, with or without a header; the proxy must send one', async (t) => {
  const h = await proxiedHarness()
  t.teardown(() => h.close())
  await h.addUser('alice')
  const spoof = await login(h, v2Header('203.0.113.7', 42000), { localAddress: '127.0.0.2', username: `alice|${h.code('alice')}` })
  t.same(spoof, { closed: true }, 'a PROXY header from 127.0.0.2 closes the socket')
  t.same(await login(h, undefined, { localAddress: '127.0.0.2', username: `alice|${h.code('alice')}` }), { closed: true }, 'so does a direct TLS client there')
  t.same(await login(h, undefined, { username: `alice|${h.code('alice')}` }), { closed: true }, 'and the trusted proxy without a header')
  await waitFor(h, 'proxy.refused', 2)
  t.match(events(h, 'proxy.refused'), [
    { level: 30, reason: 'untrusted_peer', remote: '127.0.0.2' },
    { level: 40, reason: 'missing_header', remote: '127.0.0.1' }
  ], 'once per address and reason within the minute')
  t.equal(events(h, 'login.ok').length + events(h, 'login.failed').length, 0, 'no login was even attempted')
  t.notOk(h.logs.some((l) => l.remote === '203.0.113.7'), 'the claimed address is believed nowhere')
})
