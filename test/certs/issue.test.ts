import t, { type Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tls from 'node:tls'
import { certificateExpiry, initCertificates, issueClientCertificate, parseSans } from '../../src/certs/issue.js'
import { BastionError } from '../../src/errors.js'

const OPENSSL = '/usr/bin/openssl'

function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-certs-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function openssl (...args: string[]): string {
  return execFileSync(OPENSSL, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

const mode = (file: string): number => statSync(file).mode & 0o777

t.test('initCertificates writes the CA and server files with private keys at mode 0600', async (t) => {
  const dir = join(tempDir(t), 'new')
  const r = await initCertificates({ outDir: dir })
  t.same(r, { caCert: join(dir, 'ca.crt'), caKey: join(dir, 'ca.key'), serverCert: join(dir, 'server.crt'), serverKey: join(dir, 'server.key') })
  for (const f of Object.values(r)) t.ok(existsSync(f), `${f} exists`)
  t.equal(mode(r.caKey), 0o600)
  t.equal(mode(r.serverKey), 0o600)
  t.equal(mode(r.caCert), 0o644)
  t.equal(mode(dir), 0o700, 'a new folder is private')
  t.match(readFileSync(r.serverKey, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/)
  for (const f of Object.values(r)) t.ok(readFileSync(f, 'utf8').endsWith('-----\n'), `${f} ends with a newline after its END line`)
  // What a TLS-terminating proxy is given (HAProxy's `crt`): certificate and key in one file.
  const both = readFileSync(r.serverCert, 'utf8') + readFileSync(r.serverKey, 'utf8')
  t.equal(both.match(/^-----(BEGIN|END) [A-Z ]+-----$/gm)?.length, 4, 'cat server.crt server.key gives four whole PEM lines')
  const pem = join(dir, 'proxy.pem')
  writeFileSync(pem, both)
  t.match(openssl('pkey', '-in', pem, '-noout', '-text'), /Private-Key: \(256 bit/, 'openssl reads the key out of the concatenation')
  const ca = new X509Certificate(readFileSync(r.caCert))
  t.ok(ca.ca, 'the CA certificate is a CA')
  t.match(ca.subject, 'CN=mqtt-bastion development CA')
  t.equal(ca.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1')
})

t.test('the server certificate verifies against the CA with openssl', async (t) => {
  const r = await initCertificates({ outDir: tempDir(t) })
  t.match(openssl('verify', '-CAfile', r.caCert, '-purpose', 'sslserver', r.serverCert), /: OK/)
})

t.test('the default server certificate names localhost and 127.0.0.1 and lasts 825 days', async (t) => {
  const r = await initCertificates({ outDir: tempDir(t) })
  const cert = new X509Certificate(readFileSync(r.serverCert))
  t.match(cert.subjectAltName, 'DNS:localhost')
  t.match(cert.subjectAltName, 'IP Address:127.0.0.1')
  t.match(cert.subject, 'CN=localhost')
  t.notOk(cert.ca)
  const days = (certificateExpiry(r.serverCert).getTime() - Date.now()) / 86_400_000
  t.ok(days > 824 && days <= 825, `expires in ${days} days`)
  const caDays = (certificateExpiry(r.caCert).getTime() - Date.now()) / 86_400_000
  t.ok(caDays > 3649 && caDays <= 3650, `CA expires in ${caDays} days`)
})

t.test('custom SANs, common name and lifetime end up in the server certificate', async (t) => {
  const sans = parseSans(' dns:broker.example.com , Ip:10.0.0.5,DNS:*.mqtt.example.org,IP:::1 ')
  t.same(sans, [
    { type: 'dns', value: 'broker.example.com' },
    { type: 'ip', value: '10.0.0.5' },
    { type: 'dns', value: '*.mqtt.example.org' },
    { type: 'ip', value: '::1' }
  ])
  const r = await initCertificates({ outDir: tempDir(t), sans, cn: 'broker.example.com', days: 30 })
  const cert = new X509Certificate(readFileSync(r.serverCert))
  t.match(cert.subject, 'CN=broker.example.com')
  t.match(cert.subjectAltName, 'DNS:broker.example.com')
  t.match(cert.subjectAltName, 'IP Address:10.0.0.5')
  t.match(cert.subjectAltName, 'DNS:*.mqtt.example.org')
  t.match(cert.subjectAltName, /IP Address:0:0:0:0:0:0:0:1|IP Address:::1/)
  t.notMatch(cert.subjectAltName, 'localhost')
  t.equal(cert.checkHost('broker.example.com'), 'broker.example.com')
  t.equal(cert.checkIP('10.0.0.5'), '10.0.0.5')
  const days = (certificateExpiry(r.serverCert).getTime() - Date.now()) / 86_400_000
  t.ok(days > 29 && days <= 30)
  t.match(openssl('verify', '-CAfile', r.caCert, r.serverCert), /: OK/)
})

t.test('initCertificates refuses to overwrite existing files unless forced', async (t) => {
  const dir = tempDir(t)
  const first = await initCertificates({ outDir: dir })
  const before = readFileSync(first.caKey, 'utf8')
  await t.rejects(initCertificates({ outDir: dir }), { code: 'BASTION_ERR_CERTS', message: /refusing to overwrite .*ca\.crt/ })
  t.equal(readFileSync(first.caKey, 'utf8'), before, 'the CA key is untouched')

  const other = tempDir(t)
  writeFileSync(join(other, 'server.key'), 'keep me', { mode: 0o644 })
  await t.rejects(initCertificates({ outDir: other }), { code: 'BASTION_ERR_CERTS', message: /server\.key/ })
  t.notOk(existsSync(join(other, 'ca.crt')), 'nothing is written when one file is in the way')

  const second = await initCertificates({ outDir: other, force: true })
  t.not(readFileSync(second.serverKey, 'utf8'), 'keep me')
  t.equal(mode(second.serverKey), 0o600, 'an overwritten key is tightened to 0600')
  await initCertificates({ outDir: dir, force: true })
  t.not(readFileSync(first.caKey, 'utf8'), before, 'force replaces the CA')
})

t.test('a client certificate verifies as an SSL client against the CA and carries the name as CN', async (t) => {
  const dir = tempDir(t)
  const r = await initCertificates({ outDir: dir })
  const c = await issueClientCertificate({ name: 'sensor-01', dir })
  t.same(c, { cert: join(dir, 'sensor-01.crt'), key: join(dir, 'sensor-01.key') })
  t.equal(mode(c.key), 0o600)
  t.match(openssl('verify', '-CAfile', r.caCert, '-purpose', 'sslclient', c.cert), /: OK/)
  const cert = new X509Certificate(readFileSync(c.cert))
  t.equal(cert.subject, 'CN=sensor-01')
  t.ok(cert.checkIssued(new X509Certificate(readFileSync(r.caCert))))
  t.throws(() => openssl('verify', '-CAfile', r.caCert, '-purpose', 'sslserver', c.cert), 'a client certificate is not a server certificate')

  await t.rejects(issueClientCertificate({ name: 'sensor-01', dir }), { code: 'BASTION_ERR_CERTS', message: /sensor-01\.(crt|key)/ })
  await issueClientCertificate({ name: 'sensor-01', dir, force: true })

  const out = join(tempDir(t), 'clients')
  const elsewhere = await issueClientCertificate({ name: 'other', dir, outDir: out, days: 7 })
  t.equal(elsewhere.cert, join(out, 'other.crt'))
  const days = (certificateExpiry(elsewhere.cert).getTime() - Date.now()) / 86_400_000
  t.ok(days > 6 && days <= 7)
})

t.test('issueClientCertificate rejects names outside [A-Za-z0-9_.-]{1,64}', async (t) => {
  const dir = tempDir(t)
  for (const name of ['', 'a/b', '../x', 'a b', 'x'.repeat(65)]) {
    await t.rejects(issueClientCertificate({ name, dir }), { code: 'BASTION_ERR_INVALID_USERNAME' }, JSON.stringify(name))
  }
})

t.test('issueClientCertificate with a missing CA names the missing file and says how to create it', async (t) => {
  const dir = tempDir(t)
  const err = await issueClientCertificate({ name: 'alice', dir }).then(() => undefined, (e: unknown) => e)
  t.type(err, BastionError)
  t.equal((err as BastionError).code, 'BASTION_ERR_CERTS')
  t.match((err as BastionError).message, `missing ${join(dir, 'ca.crt')}`)
  t.match((err as BastionError).message, 'run `mqtt-bastion certs init --out DIR` first')
  const r = await initCertificates({ outDir: dir })
  rmSync(r.caKey)
  await t.rejects(issueClientCertificate({ name: 'alice', dir }), { code: 'BASTION_ERR_CERTS', message: /ca\.key/ })
})

t.test('issueClientCertificate refuses a CA key that does not belong to the CA certificate', async (t) => {
  const a = tempDir(t)
  const b = tempDir(t)
  await initCertificates({ outDir: a })
  await initCertificates({ outDir: b })
  writeFileSync(join(a, 'ca.key'), readFileSync(join(b, 'ca.key')))
  await t.rejects(issueClientCertificate({ name: 'alice', dir: a }), { code: 'BASTION_ERR_CERTS', message: /does not belong/ })
  t.notOk(existsSync(join(a, 'alice.crt')))
})

t.test('a TLS handshake with the server and client certificates authorizes both sides', async (t) => {
  const dir = tempDir(t)
  const r = await initCertificates({ outDir: dir })
  const c = await issueClientCertificate({ name: 'alice', dir })
  const ca = readFileSync(r.caCert)
  let serverSide: { authorized: boolean; cn: unknown } | undefined
  const server = tls.createServer({
    cert: readFileSync(r.serverCert),
    key: readFileSync(r.serverKey),
    ca,
    requestCert: true,
    rejectUnauthorized: true
  }, (socket) => {
    serverSide = { authorized: socket.authorized, cn: socket.getPeerCertificate().subject?.CN }
    socket.end('hello')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const port = (server.address() as { port: number }).port

  const { authorized, received } = await new Promise<{ authorized: boolean; received: string }>((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca, cert: readFileSync(c.cert), key: readFileSync(c.key) })
    let received = ''
    socket.setEncoding('utf8')
    socket.on('data', (d: string) => { received += d })
    socket.on('error', reject)
    socket.on('end', () => { resolve({ authorized: socket.authorized, received }); socket.destroy() })
  })
  t.ok(authorized, 'the client trusts the server')
  t.equal(received, 'hello')
  t.same(serverSide, { authorized: true, cn: 'alice' }, 'the server trusts the client')
})

t.test('parseSans rejects unknown prefixes and bad addresses, naming the entry', async (t) => {
  t.throws(() => parseSans('DNS:localhost,FOO:bar'), {
    code: 'BASTION_ERR_INVALID_INPUT',
    message: 'invalid --san entry "FOO:bar": expected DNS:name or IP:address'
  })
  t.throws(() => parseSans('IP:999.1.1.1'), { code: 'BASTION_ERR_INVALID_INPUT', message: /"IP:999\.1\.1\.1"/ })
  t.throws(() => parseSans('localhost'), { message: /"localhost"/ })
  t.throws(() => parseSans('DNS:-bad-.example'), { message: /"DNS:-bad-\.example"/ })
  t.throws(() => parseSans('DNS:a..b'), { message: /"DNS:a\.\.b"/ })
  t.throws(() => parseSans('DNS:'), { message: /"DNS:"/ })
  t.throws(() => parseSans(' , '), { code: 'BASTION_ERR_INVALID_INPUT' })
})

t.test('certificateExpiry reports an unreadable file as a certificate error', async (t) => {
  t.throws(() => certificateExpiry(join(tempDir(t), 'nope.crt')), { code: 'BASTION_ERR_CERTS', message: /nope\.crt/ })
})
