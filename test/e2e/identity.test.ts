// Who a client is: client id prefixes, certificate identities (CN, subject, bound to the
// login) and revoked certificates, over real TLS with mqtt.js.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import mqtt, { type IClientOptions } from 'mqtt'
import { issueClientCertificate } from '../../src/certs/issue.js'
import { revokeCertificate } from '../../src/certs/revoke.js'
import { flaskLike, startGoAuthService } from '../helpers/go-auth-service.js'
import { events, PASSWORD, pubackCode, startHarness, type Harness } from '../helpers/harness.js'

const mtls = { type: 'tls', host: '127.0.0.1', port: 0, ca: 'certs/ca.crt', requireClientCertificate: true }
const certOf = (h: Harness, name: string): { cert: Buffer; key: Buffer } => ({
  cert: readFileSync(join(h.dir, 'certs', `${name}.crt`)),
  key: readFileSync(join(h.dir, 'certs', `${name}.key`))
})
const issue = (...names: string[]) => async (dir: string): Promise<void> => {
  for (const name of names) await issueClientCertificate({ name, dir: join(dir, 'certs') })
}

/** Connects and resolves 'connected', the CONNACK code, or the transport error. */
function attempt (h: Harness, opts: IClientOptions): Promise<string | number> {
  return new Promise((resolve) => {
    const c = mqtt.connect({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, connectTimeout: 5000, protocolVersion: 5, ...opts })
    c.on('connect', () => { c.end(true); resolve('connected') })
    c.on('error', (err: any) => { c.end(true); resolve(typeof err.code === 'number' ? err.code : `error: ${err.code ?? err.message}`) })
    c.on('close', () => resolve('closed'))
  })
}

t.test('only client ids with a configured prefix may connect (CONNACK 0x85 / return code 2)', async (t) => {
  const h = await startHarness({ auth: { clientIdPrefixes: ['iot-', 'dash-'], totp: { replayProtection: false } } })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const c = await h.connect('alice', { clientId: 'iot-alice-1' })
  t.equal(c.connected, true, 'iot- prefix accepted')
  await c.endAsync()
  t.equal(await h.refused({ clientId: 'alice-1', username: `alice|${h.code('alice')}`, password: PASSWORD }), 0x85, 'v5: 0x85')
  t.equal(await h.refused({ clientId: 'xiot-1', protocolVersion: 4, username: `alice|${h.code('alice')}`, password: PASSWORD }), 2, '3.1.1: return code 2')
  t.match(events(h, 'login.failed').at(-1), { reason: 'clientid_rejected', clientId: 'xiot-1' })
  const c2 = await h.connect('alice', { clientId: 'dash-alice', protocolVersion: 4 })
  t.equal(c2.connected, true, 'dash- prefix accepted for 3.1.1 too')
  await c2.endAsync()
})

t.test('useIdentityAsUsername: the certificate CN is the user, no password needed', async (t) => {
  const h = await startHarness({ listeners: [{ ...mtls, useIdentityAsUsername: true }] }, { prepare: issue('sensor1') })
  t.teardown(() => h.close())
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5, clientId: 's1', ...certOf(h, 'sensor1') })
  t.teardown(() => c.endAsync(true))
  t.match(events(h, 'login.ok').at(-1), { user: 'sensor1', certCN: 'sensor1' })
  t.equal(await pubackCode(c, 'metrics/sensor1/Temperatura', '21'), 0, 'own branch: PUBACK 0')
  t.equal(await pubackCode(c, 'metrics/sensor2/Temperatura', '21'), 0x87, 'another branch: 0x87')
  t.match(await attempt(h, {}), /^(closed|error: )/, 'no certificate: the handshake fails before any login')
})

t.test('with a certificate identity an HTTP ACL backend is asked about the CN, never the username the client typed', async (t) => {
  const svc = await startGoAuthService(flaskLike({
    sensor1: { password: 'unused', code: '000000', publish: ['metrics/sensor1/Temperatura'], subscribe: [] },
    admin: { password: 'unused', code: '000000', publish: ['metrics/admin/Temperatura'], subscribe: [] }
  }))
  t.teardown(() => svc.close())
  const h = await startHarness({
    listeners: [{ ...mtls, useIdentityAsUsername: true }],
    auth: { store: { type: 'http', url: svc.url } },
    acl: { policy: 'http' }
  }, { prepare: issue('sensor1') })
  t.teardown(() => h.close())
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5, username: 'admin', password: 'x', ...certOf(h, 'sensor1') })
  t.teardown(() => c.endAsync(true))
  t.equal(await pubackCode(c, 'metrics/admin/Temperatura', '1'), 0x87, 'the typed username grants nothing')
  t.equal(await pubackCode(c, 'metrics/sensor1/Temperatura', '1'), 0, 'the certificate\'s user is what the backend sees')
  t.same(svc.received.filter((r) => r.path === '/auth/acl').map((r) => r.fields.username), ['sensor1', 'sensor1'])
  t.equal(svc.hits('/auth/user'), 0, 'the certificate decides the login; the user endpoint is not asked')
})

t.test('useSubjectAsUsername: the full subject (RFC 2253) is the user', async (t) => {
  const h = await startHarness({ listeners: [{ ...mtls, useSubjectAsUsername: true }] }, { prepare: issue('sensor1') })
  t.teardown(() => h.close())
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5, ...certOf(h, 'sensor1') })
  t.teardown(() => c.endAsync(true))
  t.match(events(h, 'login.ok').at(-1), { user: 'CN=sensor1' })
  t.equal(await pubackCode(c, 'metrics/CN=sensor1/Estado', 'ok'), 0, 'the subject is the ACL branch')
  t.equal(await pubackCode(c, 'metrics/sensor1/Estado', 'ok'), 0x87, 'the bare CN is not')
})

t.test('bindCertificate: certificate + password + code, and the CN must be the user', async (t) => {
  const h = await startHarness({ listeners: [{ ...mtls, bindCertificate: true }], auth: { totp: { replayProtection: false } } }, { prepare: issue('sensor1', 'sensor2') })
  t.teardown(() => h.close())
  await h.addUser('sensor1')
  await h.addUser('sensor2')
  const login = (user: string, password = PASSWORD): IClientOptions => ({ username: `${user}|${h.code(user)}`, password })
  t.equal(await attempt(h, { ...certOf(h, 'sensor1'), ...login('sensor1') }), 'connected', 'own certificate, password and code')
  const before = events(h, 'login.failed').length
  t.equal(await attempt(h, { ...certOf(h, 'sensor2'), ...login('sensor1') }), 0x86, 'another user\'s certificate: 0x86')
  t.match(events(h, 'login.failed').slice(before)[0], { reason: 'certificate_mismatch', user: 'sensor2' })
  t.equal(await attempt(h, { ...certOf(h, 'sensor1'), ...login('sensor1', 'wrong-password') }), 0x86, 'right certificate, wrong password: 0x86')
  t.equal(await attempt(h, { ...certOf(h, 'sensor1'), username: 'sensor1|000000', password: PASSWORD }), 0x86, 'right certificate, wrong code: 0x86')
  t.equal(await attempt(h, { ...certOf(h, 'sensor1'), protocolVersion: 4, ...login('sensor2') }), 4, '3.1.1 mismatch: return code 4')
})

function handshake (port: number, ca: Buffer, cert: { cert: Buffer; key: Buffer }): Promise<string> {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, ca, servername: 'localhost', ...cert }, () => {
      // TLS 1.3 reports a client certificate refusal after the client's handshake completes:
      // wait for the server's verdict before calling it accepted.
      s.once('data', () => {})
      setTimeout(() => { const ok = !s.destroyed; s.destroy(); resolve(ok ? 'accepted' : 'refused') }, 300)
    })
    s.on('error', (err: NodeJS.ErrnoException) => { s.destroy(); resolve(`refused: ${err.code ?? err.message}`) })
  })
}

t.test('a revoked certificate fails the handshake; a reload takes new revocations without dropping clients', async (t) => {
  const h = await startHarness({ listeners: [{ ...mtls, useIdentityAsUsername: true, crl: 'certs/crl.pem' }] }, {
    prepare: async (dir) => {
      await issue('sensor1', 'sensor2', 'sensor3')(dir)
      await revokeCertificate({ name: 'sensor2', dir: join(dir, 'certs') })
    }
  })
  t.teardown(() => h.close())
  t.equal(await handshake(h.port, h.ca, certOf(h, 'sensor1')), 'accepted', 'a valid certificate passes')
  t.match(await handshake(h.port, h.ca, certOf(h, 'sensor2')), /^refused/, 'the revoked one does not')
  await new Promise((resolve) => setTimeout(resolve, 100))
  t.ok(events(h, 'tls.handshake_failed').some((e) => /REVOKED|revoked/.test(String(e.reason))), 'the log says it was revoked')

  const live = await mqtt.connectAsync({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5, ...certOf(h, 'sensor3') })
  t.teardown(() => live.endAsync(true))
  // The CLI, as an operator would run it.
  const cli = join(process.cwd(), 'dist', 'cli', 'main.js')
  const out = execFileSync(process.execPath, [cli, 'certs', 'revoke', 'sensor3', '--out', join(h.dir, 'certs')], { encoding: 'utf8' })
  t.match(out, /^revoked sensor3 \(serial [0-9a-f]+\); wrote .*crl\.pem \(2 revoked in all\)/)
  t.match(execFileSync(process.execPath, [cli, 'certs', 'revoke', 'sensor3', '--out', join(h.dir, 'certs')], { encoding: 'utf8' }), /^already revoked sensor3/, 'revoking twice changes nothing')
  t.match(await handshake(h.port, h.ca, certOf(h, 'sensor3')), /^accepted/, 'before the reload the old list still serves')
  await h.bastion.reload()
  t.match(await handshake(h.port, h.ca, certOf(h, 'sensor3')), /^refused/, 'after the reload sensor3 is refused')
  t.equal(await handshake(h.port, h.ca, certOf(h, 'sensor1')), 'accepted', 'others still pass')
  t.equal(await pubackCode(live, 'metrics/sensor3/Estado', 'still here'), 0, 'the connection made before the revocation stays up')
  t.ok(events(h, 'reload.ok').length >= 1, 'the reload is logged')
})

t.test('a certificate revocation list from another CA is refused, naming the file', async (t) => {
  const h = await startHarness({}, { prepare: issue('sensor1') })
  t.teardown(() => h.close())
  const other = await startHarness({}, { prepare: issue('sensor1') })
  t.teardown(() => other.close())
  await revokeCertificate({ name: 'sensor1', dir: join(other.dir, 'certs') })
  execFileSync('cp', [join(other.dir, 'certs', 'crl.pem'), join(h.dir, 'certs', 'crl.pem')])
  await t.rejects(revokeCertificate({ name: 'sensor1', dir: join(h.dir, 'certs') }), { code: 'BASTION_ERR_CERTS', message: /crl\.pem was not signed by this CA/ })
})
