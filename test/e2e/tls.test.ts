// The TLS listener: versions, client certificates, and refusing to run with exposed keys.
import t from 'tap'
import { createServer as createNetServer, type AddressInfo } from 'node:net'
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import mqtt from 'mqtt'
import { initCertificates, issueClientCertificate } from '../../src/certs/issue.js'
import { createBastion } from '../../src/bastion.js'
import { parseConfig } from '../../src/config/schema.js'
import { events, PASSWORD, startHarness } from '../helpers/harness.js'
import { scratch } from '../helpers/scratch.js'

const scratchDir = scratch('bastion-tls-')

/** Resolves with the negotiated protocol, or rejects with the handshake error. */
function handshake (port: number, ca: Buffer, opts: Record<string, unknown>): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost', ...opts }, () => {
      const v = s.getProtocol()
      // end(), not destroy(): a reset can reach the server before the client's TLS 1.3 Finished.
      s.end()
      resolve(v)
    })
    s.on('error', reject)
  })
}

t.test('TLS 1.2 and 1.3 are accepted, TLS 1.1 and 1.0 are refused by the server', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  t.equal(await handshake(h.port, h.ca, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }), 'TLSv1.2')
  t.equal(await handshake(h.port, h.ca, {}), 'TLSv1.3')
  for (const v of ['TLSv1.1', 'TLSv1'] as const) {
    // SECLEVEL=0 lets this client offer the old version, so the refusal is the server's.
    await t.rejects(handshake(h.port, h.ca, { minVersion: v, maxVersion: v, ciphers: 'DEFAULT@SECLEVEL=0' }), undefined, `${v} refused`)
  }
  const refusals = (): unknown[] => events(h, 'tls.handshake_failed').filter((e) => e.reason === 'ERR_SSL_UNSUPPORTED_PROTOCOL')
  for (let i = 0; i < 250 && refusals().length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  // Same address, same reason: the second refusal waits for the next minute's line.
  t.equal(refusals().length, 1, 'the refusals are logged, once per address and reason')
})

t.test('minVersion TLSv1.3 refuses a TLS 1.2 client', async (t) => {
  const h = await startHarness({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0, minVersion: 'TLSv1.3' }] })
  t.teardown(() => h.close())
  await t.rejects(handshake(h.port, h.ca, { maxVersion: 'TLSv1.2' }))
  t.equal(await handshake(h.port, h.ca, {}), 'TLSv1.3')
})

t.test('requireClientCertificate refuses the handshake without a certificate of the configured CA', async (t) => {
  const h = await startHarness({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0, ca: 'certs/ca.crt', requireClientCertificate: true }], auth: { totp: { replayProtection: false } } })
  t.teardown(() => h.close())
  await h.addUser('sensor1')
  const certs = join(h.dir, 'certs')
  await issueClientCertificate({ name: 'sensor1', dir: certs })
  const otherCa = scratchDir()
  await initCertificates({ outDir: otherCa })
  await issueClientCertificate({ name: 'sensor1', dir: otherCa })

  const mqttTry = (opts: Record<string, unknown>): Promise<string> => new Promise((resolve) => {
    const c = mqtt.connect({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5, username: `sensor1|${h.code('sensor1')}`, password: PASSWORD, ...opts })
    c.on('connect', () => { c.end(true); resolve('connected') })
    c.on('error', (err: any) => { c.end(true); resolve(`error: ${err.code ?? err.message}`) })
    c.on('close', () => resolve('closed'))
  })
  t.not(await mqttTry({}), 'connected', 'no certificate: refused')
  t.not(await mqttTry({ cert: readFileSync(join(otherCa, 'sensor1.crt')), key: readFileSync(join(otherCa, 'sensor1.key')) }), 'connected', 'certificate of another CA: refused')
  const before = events(h, 'login.ok').length
  t.equal(events(h, 'login.failed').length, 0, 'no MQTT login was even attempted')
  t.equal(await mqttTry({ cert: readFileSync(join(certs, 'sensor1.crt')), key: readFileSync(join(certs, 'sensor1.key')) }), 'connected', 'valid certificate: connected')
  t.equal(events(h, 'login.ok').slice(before)[0]?.certCN, 'sensor1', 'the certificate CN is on the login event')
})

t.test('the optional plain listener binds loopback, logs a warning and still requires a login', async (t) => {
  const h = await startHarness({
    listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }, { type: 'tcp', port: 0 }],
    auth: { totp: { replayProtection: false } }
  })
  t.teardown(() => h.close())
  const plain = h.bastion.listeners[1]!
  t.equal(plain.host, '127.0.0.1')
  t.match(events(h, 'listener.started').find((e) => e.type === 'tcp'), { level: 40, msg: /UNENCRYPTED/ })
  await h.addUser('local1')
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port: plain.port, protocol: 'mqtt', protocolVersion: 5, reconnectPeriod: 0, username: `local1|${h.code('local1')}`, password: PASSWORD })
  t.equal(c.connected, true)
  await c.endAsync()
  t.equal(await h.refused({ protocol: 'mqtt', port: plain.port, username: 'local1|000000', password: PASSWORD }), 0x86)
})

t.test('the broker refuses to start when the TLS key or the user store is readable by others', async (t) => {
  const dir = scratchDir()
  await initCertificates({ outDir: join(dir, 'certs') })
  const config = parseConfig({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }], log: { level: 'silent' } }, dir)
  chmodSync(join(dir, 'certs', 'server.key'), 0o640)
  await t.rejects(createBastion(config), { code: 'BASTION_ERR_FILE_PERMISSIONS', message: /server\.key .*chmod 600/ })
  chmodSync(join(dir, 'certs', 'server.key'), 0o600)
  const store = createFileStoreFile(dir)
  chmodSync(store, 0o644)
  await t.rejects(createBastion(config), { code: 'BASTION_ERR_FILE_PERMISSIONS', message: /users\.json .*chmod 600/ })
})

t.test('missing certificate files are named; development certificates are made only when asked', async (t) => {
  const dir = scratchDir()
  const config = parseConfig({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }], log: { level: 'silent' } }, dir)
  await t.rejects(createBastion(config), { code: 'BASTION_ERR_CERTS', message: /server\.crt: ENOENT; create the CA and server certificate with: mqtt-bastion certs init --out \// })
  const noCrl = parseConfig({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0, ca: 'certs/ca.crt', crl: 'certs/crl.pem', requireClientCertificate: true }], log: { level: 'silent' }, devCertificates: true }, dir)
  await t.rejects(createBastion(noCrl), { code: 'BASTION_ERR_CERTS', message: /crl\.pem: ENOENT; it is written by: mqtt-bastion certs revoke NAME --out \// }, 'a missing CRL points at certs revoke, not certs init')
  const dev = parseConfig({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }], log: { level: 'silent' }, devCertificates: true }, dir)
  const b = await createBastion(dev)
  t.teardown(() => b.close())
  t.ok(readFileSync(join(dir, 'certs', 'ca.crt')).length > 0, 'CA written')
  t.ok(b.listeners[0]!.port > 0)
})

function createFileStoreFile (dir: string): string {
  const path = join(dir, 'data', 'users.json')
  mkdirSync(join(dir, 'data'), { recursive: true })
  writeFileSync(path, JSON.stringify({ version: 1, users: [] }))
  return path
}

t.test('a port in use is named with a hint, and the broker does not start', async (t) => {
  const dir = scratchDir()
  await initCertificates({ outDir: join(dir, 'certs') })
  const squatter = createNetServer()
  await new Promise<void>((resolve) => squatter.listen(0, '127.0.0.1', resolve))
  t.teardown(() => squatter.close())
  const port = (squatter.address() as AddressInfo).port
  const config = parseConfig({ listeners: [{ type: 'tls', host: '127.0.0.1', port }], log: { level: 'silent' } }, dir)
  await t.rejects(createBastion(config), { code: 'BASTION_ERR_LISTEN', message: new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port} \\(tls\\): EADDRINUSE: another program .* holds that port`) })
})
