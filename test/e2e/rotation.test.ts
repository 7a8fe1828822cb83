// Server certificate rotation on SIGHUP against the built CLI: new handshakes get the new
// certificate, connections made before keep working, and files that do not load are refused
// with the old certificate still serving.
import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { chmodSync, copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import type { MqttClient } from 'mqtt'
import { cliBrokerFolder, type CliBroker } from '../helpers/cli-broker.js'
import { nextMessage } from '../helpers/harness.js'

const folder = await cliBrokerFolder()
t.teardown(() => folder.close())
await folder.addUser('alice')
const certs = join(folder.dir, 'certs')
const SERVER_CRT = join(certs, 'server.crt')
const SERVER_KEY = join(certs, 'server.key')

/** A renewed server certificate from the same CA, made the way an operator would: openssl. */
function renew (name: string): { crt: string; key: string } {
  const key = join(certs, `${name}.key`)
  const csr = join(certs, `${name}.csr`)
  const crt = join(certs, `${name}.crt`)
  const ext = join(certs, `${name}.ext`)
  writeFileSync(ext, 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n')
  execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key], { stdio: 'pipe' })
  execFileSync('openssl', ['req', '-new', '-key', key, '-subj', '/CN=localhost', '-out', csr], { stdio: 'pipe' })
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', join(certs, 'ca.crt'), '-CAkey', join(certs, 'ca.key'), '-set_serial', `0x${Date.now().toString(16)}`,
    '-days', '90', '-sha256', '-extfile', ext, '-out', crt], { stdio: 'pipe' })
  return { crt, key }
}

/** Puts a certificate and key in place of the served ones (the key keeps mode 0600). */
function install (files: { crt: string; key: string }): void {
  copyFileSync(files.crt, SERVER_CRT)
  copyFileSync(files.key, SERVER_KEY)
}

const fingerprintOf = (crtFile: string): string => new X509Certificate(readFileSync(crtFile)).fingerprint256

/** The certificate a fresh TLS handshake is served, verified against the CA. */
async function servedFingerprint (port: number, ca: Buffer): Promise<string> {
  return await new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', ca, rejectUnauthorized: true }, () => {
      const fp = s.getPeerCertificate().fingerprint256
      s.end()
      resolve(fp)
    })
    s.once('error', reject)
  })
}

/** Sends SIGHUP and resolves with the listener's certificate reload line (reload.ok or reload.failed). */
async function sighup (broker: CliBroker): Promise<Record<string, any>> {
  const since = broker.logs.length
  broker.proc.kill('SIGHUP')
  const isCerts = (l: Record<string, any>): boolean => (l.event === 'reload.ok' || l.event === 'reload.failed') && /certificates/.test(String(l.what))
  return await Promise.race([
    broker.waitFor('reload.ok', { since, match: isCerts }),
    broker.waitFor('reload.failed', { since, match: isCerts })
  ])
}

/** The live client still publishes and receives over the connection it made before. */
async function stillServes (t: Test, c: MqttClient, payload: string): Promise<void> {
  const got = nextMessage(c, 5000)
  await c.publishAsync('metrics/alice/Estado', payload, { qos: 1 })
  t.equal((await got)?.payload, payload, `the connection made before still delivers (${payload})`)
}

const broker = await folder.start(folder.config())
t.teardown(() => broker.kill())
const original = fingerprintOf(SERVER_CRT)
const live = await broker.connect('alice')
t.teardown(() => live.end(true))
await live.subscribeAsync('metrics/alice/#', { qos: 1 })
let serving = original

t.test('after SIGHUP new handshakes get the renewed certificate and the live connection stays up', async (t) => {
  t.equal(await servedFingerprint(broker.port, broker.ca), original, 'the first certificate is served at start')
  const renewed = renew('renewed')
  install(renewed)
  t.match(await sighup(broker), { event: 'reload.ok', level: 30 }, 'SIGHUP reloads the certificate')
  serving = fingerprintOf(renewed.crt)
  t.not(serving, original, 'the renewed certificate is another one')
  t.equal(await servedFingerprint(broker.port, broker.ca), serving, 'a new handshake sees the renewed certificate')
  t.equal(live.connected, true, 'the connection made before the reload is still up')
  await stillServes(t, live, 'after rotation')
  const fresh = await broker.connect('alice', { offset: 1 })
  t.equal(fresh.connected, true, 'an MQTT client verifying the CA logs in over the renewed certificate')
  await fresh.endAsync()
})

t.test('a certificate file that is not a certificate is refused, naming it, and the old one keeps serving', async (t) => {
  const good = { crt: join(certs, 'good.crt'), key: join(certs, 'good.key') }
  copyFileSync(SERVER_CRT, good.crt)
  copyFileSync(SERVER_KEY, good.key)
  writeFileSync(SERVER_CRT, '-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n')
  const failed = await sighup(broker)
  t.match(failed, { event: 'reload.failed', level: 50, reason: /server\.crt/ }, 'one error line naming the file')
  t.equal(await servedFingerprint(broker.port, broker.ca), serving, 'new handshakes still get the certificate that loaded last')
  await stillServes(t, live, 'after a garbage certificate')
  install(good)
})

t.test('a certificate whose key does not match is refused and the old one keeps serving', async (t) => {
  const other = renew('other')
  const mismatched = renew('mismatched')
  install({ crt: other.crt, key: mismatched.key })
  const failed = await sighup(broker)
  t.match(failed, { event: 'reload.failed', level: 50, reason: /server\.crt.*server\.key|server\.key.*server\.crt/ }, 'one error line naming the files')
  t.match(failed.reason, /key values mismatch|does not match/i, 'saying the key does not match')
  t.equal(await servedFingerprint(broker.port, broker.ca), serving, 'new handshakes still get the certificate that loaded last')
  const fresh = await broker.connect('alice', { offset: 1 })
  t.equal(fresh.connected, true, 'and new MQTT logins work')
  await fresh.endAsync()
  await stillServes(t, live, 'after a mismatched key')

  install(other)
  t.match(await sighup(broker), { event: 'reload.ok' }, 'the corrected pair loads on the next SIGHUP')
  t.equal(await servedFingerprint(broker.port, broker.ca), fingerprintOf(other.crt), 'and is served')
})

t.test('a new key readable by group or others is refused as at start, with the chmod that fixes it', async (t) => {
  const next = renew('next')
  install(next)
  chmodSync(SERVER_KEY, 0o644)
  const failed = await sighup(broker)
  t.match(failed, { event: 'reload.failed', reason: /server\.key .*chmod 600/ }, 'one error line naming the key and the chmod')
  t.not(await servedFingerprint(broker.port, broker.ca), fingerprintOf(next.crt), 'the new certificate is not served')
  chmodSync(SERVER_KEY, 0o600)
  t.match(await sighup(broker), { event: 'reload.ok' }, 'after the chmod the next SIGHUP loads it')
  t.equal(await servedFingerprint(broker.port, broker.ca), fingerprintOf(next.crt), 'and serves it')
})
