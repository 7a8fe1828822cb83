// The TLS side of the wss listener: client certificates and their identity modes work as on the
// TLS listener, and a reload (SIGHUP) swaps the server certificate for new handshakes.
import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt, { type IClientOptions } from 'mqtt'
import { initCertificates, issueClientCertificate } from '../../src/certs/issue.js'
import { events, PASSWORD, pubackCode, startHarness, type Harness } from '../helpers/harness.js'

const TLS = { type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', ca: 'certs/ca.crt' }
const WSS = { type: 'wss', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key' }

const wssPort = (h: Harness): number => h.bastion.listeners[1]?.port as number

/** Connects over wss: 'connected' (then closed), the CONNACK code, or what the transport said. */
function attempt (h: Harness, o: IClientOptions): Promise<number | string> {
  return new Promise((resolve) => {
    const c = mqtt.connect(`wss://127.0.0.1:${wssPort(h)}/mqtt`, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, ca: h.ca, rejectUnauthorized: true, wsOptions: { servername: 'localhost' }, ...o })
    let transport = 'closed'
    c.stream.on('error', (err: Error) => { transport = `error: ${err.message}` })
    c.on('connect', () => { c.end(true); resolve('connected') })
    c.on('error', (err: any) => { c.end(true); resolve(typeof err.code === 'number' ? err.code : `error: ${err.message}`) })
    c.on('close', () => resolve(transport))
  })
}

t.test('useIdentityAsUsername over wss: the certificate CN is the user; without a certificate the handshake fails', async (t) => {
  const h = await startHarness({ listeners: [TLS, { ...WSS, ca: 'certs/ca.crt', requireClientCertificate: true, useIdentityAsUsername: true }] }, {
    prepare: async (dir) => { await issueClientCertificate({ name: 'sensor1', dir: join(dir, 'certs') }) }
  })
  t.teardown(() => h.close())
  const cert = { cert: readFileSync(join(h.dir, 'certs', 'sensor1.crt')), key: readFileSync(join(h.dir, 'certs', 'sensor1.key')) }
  const c = await mqtt.connectAsync(`wss://127.0.0.1:${wssPort(h)}/mqtt`, { protocolVersion: 5, reconnectPeriod: 0, clientId: 's1', ca: h.ca, wsOptions: { servername: 'localhost' }, ...cert })
  t.teardown(() => c.endAsync(true))
  t.match(events(h, 'login.ok').at(-1), { user: 'sensor1', certCN: 'sensor1', clientId: 's1' })
  t.equal(await pubackCode(c, 'metrics/sensor1/Temperatura', '21'), 0, 'own branch: PUBACK 0')
  t.equal(await pubackCode(c, 'metrics/sensor2/Temperatura', '21'), 0x87, 'another branch: 0x87')
  t.match(await attempt(h, { clientId: 's2' }), /^(closed|error: )/, 'no certificate: refused before any login')
  t.equal(events(h, 'login.ok').length, 1, 'no second login')
})

t.test('a reload swaps the server certificate of the wss listener for new connections', async (t) => {
  const h = await startHarness({ auth: { totp: { replayProtection: false } }, listeners: [TLS, WSS] })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const login = (): IClientOptions => ({ username: `alice|${h.code('alice')}`, password: PASSWORD })
  t.equal(await attempt(h, login()), 'connected', 'the first certificate')
  const next = await initCertificates({ outDir: join(h.dir, 'next') })
  // Written over the old files: they keep their 0600 mode.
  writeFileSync(join(h.dir, 'certs', 'server.crt'), readFileSync(next.serverCert))
  writeFileSync(join(h.dir, 'certs', 'server.key'), readFileSync(next.serverKey))
  await h.bastion.reload()
  t.ok(events(h, 'reload.ok').some((e) => /^wss listener 127\.0\.0\.1:\d+ certificates$/.test(e.what)), 'reload.ok names the wss listener')
  t.match(await attempt(h, login()), /^error: .*(self-signed|unable to verify|certificate)/i, 'the old CA no longer verifies the server')
  t.equal(await attempt(h, { ...login(), ca: readFileSync(next.caCert) }), 'connected', 'the new CA does')
})
