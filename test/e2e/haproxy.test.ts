// Debian's haproxy in front of the broker (mode tcp, TLS passed through, send-proxy-v2), as
// deployments behind a load balancer run it: the broker logs and locks out the device's own
// address (127.0.0.9, a second loopback address), while its TCP peer is haproxy on 127.0.0.1.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import mqtt, { type IClientOptions } from 'mqtt'
import { events, PASSWORD, startHarness, type Harness } from '../helpers/harness.js'
import { accepting, freePort } from '../helpers/ports.js'

const HAPROXY = '/usr/sbin/haproxy'
const DEVICE = '127.0.0.9'

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/**
 * The peers of established TCP connections to 127.0.0.1:port, from /proc/net/tcp (the kernel's
 * view, whatever the broker believes). Addresses there are hex in host byte order (little endian).
 */
function tcpPeers (port: number): string[] {
  const hex = port.toString(16).toUpperCase().padStart(4, '0')
  return readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((f) => f[1]?.endsWith(`:${hex}`) === true && f[3] === '01')
    .map((f) => (f[2]?.split(':')[0]?.match(/../g) ?? []).reverse().map((b) => parseInt(b, 16)).join('.'))
}

type Outcome = 'connected' | number | 'closed'

/**
 * One MQTT 5 login as alice through `port` from `localAddress`, with the code `offset` steps
 * ahead: connected, the CONNACK refusal, or closed before one (bounded: 10 s).
 */
async function attempt (h: Harness, port: number, localAddress: string, password: string, offset = 0, keep?: (c: mqtt.MqttClient) => void): Promise<Outcome> {
  const c = mqtt.connect({
    host: '127.0.0.1', port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', localAddress,
    reconnectPeriod: 0, connectTimeout: 10_000, protocolVersion: 5, username: `alice|${h.code('alice', offset)}`, password
  } as IClientOptions)
  return await new Promise((resolve) => {
    const done = (o: Outcome): void => {
      clearTimeout(timer)
      c.removeAllListeners('close')
      if (o === 'connected' && keep !== undefined) keep(c)
      else c.end(true)
      resolve(o)
    }
    const timer = setTimeout(() => done('closed'), 10_000)
    c.on('connect', () => done('connected'))
    c.on('error', (err: any) => { if (typeof err.code === 'number') done(err.code) })
    c.on('close', () => done('closed'))
  })
}

const h = await startHarness({
  listeners: [{ type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', ca: 'certs/ca.crt', proxyProtocol: { trusted: ['127.0.0.1'] } }],
  auth: { lockout: { window: 60, maxFailuresPerUser: 0, maxFailuresPerIp: 3, duration: 60, maxDuration: 60 } }
})
t.teardown(() => h.close())
await h.addUser('alice')

const dir = mkdtempSync(join(tmpdir(), 'bastion-haproxy-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const front = await freePort()
writeFileSync(join(dir, 'haproxy.cfg'), [
  'global',
  '  maxconn 64',
  'defaults',
  '  mode tcp',
  '  timeout connect 5s',
  '  timeout client 30s',
  '  timeout server 30s',
  'frontend mqtts',
  `  bind 127.0.0.1:${front}`,
  '  default_backend bastion',
  'backend bastion',
  // TLS is passed through untouched; the device's address travels in a PROXY v2 header.
  `  server broker 127.0.0.1:${h.port} send-proxy-v2`
].join('\n') + '\n')
let stderr = ''
const haproxy = spawn(HAPROXY, ['-f', join(dir, 'haproxy.cfg'), '-db'], { stdio: ['ignore', 'ignore', 'pipe'] })
haproxy.stderr.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
const exited = new Promise((resolve) => haproxy.once('exit', resolve))
t.teardown(async () => {
  haproxy.kill('SIGTERM')
  await Promise.race([exited, sleep(3000).then(() => haproxy.kill('SIGKILL'))])
})
// Probed from 127.0.0.250, an address no assertion names.
await accepting(front, 10_000, 'haproxy', '127.0.0.250').catch((err: Error) => { throw new Error(`${err.message}: ${stderr}`) })

t.test('through haproxy the broker sees the device address while its TCP peer is haproxy', async (t) => {
  let client: mqtt.MqttClient | undefined
  t.equal(await attempt(h, front, DEVICE, PASSWORD, 0, (c) => { client = c }), 'connected')
  t.match(events(h, 'login.ok'), [{ user: 'alice', remote: DEVICE }], 'login.ok names the device')
  t.same([...new Set(tcpPeers(h.port))], ['127.0.0.1'], 'the kernel sees only haproxy connected to the broker')
  await client?.endAsync()
  t.equal(await attempt(h, h.port, DEVICE, PASSWORD), 'closed', 'the device itself, straight to the broker, is refused')
  t.match(events(h, 'proxy.refused'), [{ reason: 'untrusted_peer', remote: DEVICE }])
})

t.test('a lockout earned through haproxy names the device, and other devices behind it still log in', async (t) => {
  // The current code was used above (a code works once): these logins carry the next one.
  for (let i = 0; i < 3; i++) t.equal(await attempt(h, front, DEVICE, 'wrong password', 1), 0x86, `guess ${i + 1}`)
  t.match(events(h, 'login.failed'), [{ reason: 'bad_password', remote: DEVICE }])
  t.match(events(h, 'auth.lockout'), [{ scope: 'ip', remote: DEVICE, failures: 3 }])
  t.equal(await attempt(h, front, DEVICE, PASSWORD, 1), 'closed', 'the right password from the locked address: closed before TLS')
  t.match(events(h, 'connection.locked_out'), [{ remote: DEVICE }])
  t.equal(await attempt(h, front, '127.0.0.10', PASSWORD, 1), 'connected', 'another device behind haproxy')
  t.match(events(h, 'login.ok').at(-1), { remote: '127.0.0.10' })
  t.notOk(events(h, 'auth.lockout').some((e) => e.remote === '127.0.0.1'), 'haproxy itself is never locked out')
})
