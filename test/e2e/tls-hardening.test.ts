// TLS hardening: on TLS 1.2 only ECDHE + AEAD suites (TLS 1.3 as Node ships it), no client-
// initiated renegotiation, a `ciphers` option to loosen it, and handshake refusals logged once
// per address, reason and minute. Checked with Node's client, openssl s_client and sslscan.
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls'
import { promisify } from 'node:util'
import { pino } from 'pino'
import { initCertificates } from '../../src/certs/issue.js'
import { DEFAULT_TLS_CIPHERS, parseConfig, type TlsListenerConfig } from '../../src/config/schema.js'
import { startTlsListener } from '../../src/listeners/tls.js'
import { createLogGate, type LogGate } from '../../src/log-gate.js'
import { events, startHarness, type Harness } from '../helpers/harness.js'

const run = promisify(execFile)

type KeyType = 'ecdsa' | 'rsa'
/** Refused by default: CBC (Lucky13) and, for RSA, RSA key exchange (no forward secrecy). */
const REFUSED: Record<KeyType, string[]> = {
  ecdsa: ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA', 'ECDHE-ECDSA-AES128-SHA256', 'ECDHE-ECDSA-AES256-SHA384'],
  rsa: ['ECDHE-RSA-AES128-SHA', 'ECDHE-RSA-AES256-SHA', 'ECDHE-RSA-AES128-SHA256', 'ECDHE-RSA-AES256-SHA384',
    'AES128-GCM-SHA256', 'AES256-GCM-SHA384']
}
const ACCEPTED: Record<KeyType, string[]> = {
  ecdsa: ['ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-ECDSA-CHACHA20-POLY1305'],
  rsa: ['ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES256-GCM-SHA384', 'ECDHE-RSA-CHACHA20-POLY1305']
}
/** Node 20's TLS 1.3 suites, which the listener leaves as they are. */
const TLS13 = ['TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256', 'TLS_AES_128_GCM_SHA256']

const LOCAL = { type: 'tls', host: '127.0.0.1', port: 0 }
const RSA_FILES = { cert: 'certs/rsa.crt', key: 'certs/rsa.key' }

interface Negotiated { protocol: string | null; cipher: string }

/** One handshake; resolves with what was negotiated, or rejects with the client's error. */
function handshake (port: number, opts: ConnectionOptions = {}): Promise<Negotiated> {
  return new Promise((resolve, reject) => {
    // The certificate is not under test here (test/e2e/tls.test.ts verifies it): only what the
    // server agrees to, for whichever key type the listener holds.
    const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, ...opts }, () => {
      const negotiated = { protocol: s.getProtocol(), cipher: s.getCipher().name }
      // end(), not destroy(): closing with the server's TLS 1.3 tickets unread sends a reset,
      // which can reach the server before the client's Finished does.
      s.end()
      resolve(negotiated)
    })
    s.on('error', (err) => {
      s.destroy()
      reject(err)
    })
  })
}

/** A TLS 1.2 client offering exactly `cipher`. */
function tls12 (port: number, cipher: string, opts: ConnectionOptions = {}): Promise<Negotiated> {
  return handshake(port, { maxVersion: 'TLSv1.2', ciphers: cipher, ...opts })
}

/** Polls `done` every 20 ms, at most `ms`; the caller asserts on the outcome. */
async function until (done: () => boolean, ms = 5000): Promise<boolean> {
  for (let waited = 0; !done() && waited < ms; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20))
  return done()
}

/** An RSA-2048 self-signed certificate, the kind people bring from elsewhere. */
async function rsaCertificate (dir: string): Promise<void> {
  const key = join(dir, RSA_FILES.key)
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', join(dir, RSA_FILES.cert),
    '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-days', '2'])
  chmodSync(key, 0o600)
}

// One broker, four listeners: ECDSA (what `certs init` issues) and RSA certificates, each with
// the default list and with the refused suites added back through `ciphers`.
let h: Harness
const ports = { ecdsa: 0, rsa: 0, loose: { ecdsa: 0, rsa: 0 } }
t.before(async () => {
  h = await startHarness({
    listeners: [
      LOCAL,
      { ...LOCAL, ...RSA_FILES },
      { ...LOCAL, ciphers: `${DEFAULT_TLS_CIPHERS}:${REFUSED.ecdsa.join(':')}` },
      { ...LOCAL, ...RSA_FILES, ciphers: `${DEFAULT_TLS_CIPHERS}:${REFUSED.rsa.join(':')}` }
    ],
    auth: { totp: { replayProtection: false } }
  }, { prepare: rsaCertificate })
  const [ecdsa, rsa, looseEcdsa, looseRsa] = h.bastion.listeners.map((l) => l.port)
  Object.assign(ports, { ecdsa, rsa, loose: { ecdsa: looseEcdsa, rsa: looseRsa } })
})
t.teardown(async () => await h?.close())

t.test('TLS 1.2 refuses every CBC suite and RSA key exchange, for ECDSA and RSA certificates', async (t) => {
  for (const type of ['ecdsa', 'rsa'] as const) {
    for (const cipher of REFUSED[type]) {
      await t.rejects(tls12(ports[type], cipher), { code: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' }, `${cipher} refused by default`)
      // Proof the refusal is the cipher list's: added back through `ciphers`, the suite works.
      t.same(await tls12(ports.loose[type], cipher), { protocol: 'TLSv1.2', cipher }, `${cipher} accepted when listed in ciphers`)
    }
  }
  await until(() => events(h, 'tls.handshake_failed').length > 0)
  t.match(events(h, 'tls.handshake_failed')[0], { remote: '127.0.0.1', reason: 'ERR_SSL_NO_SHARED_CIPHER' })
})

t.test('TLS 1.2 accepts ECDHE with AES-GCM and ChaCha20-Poly1305, for ECDSA and RSA certificates', async (t) => {
  for (const type of ['ecdsa', 'rsa'] as const) {
    for (const cipher of ACCEPTED[type]) t.same(await tls12(ports[type], cipher), { protocol: 'TLSv1.2', cipher }, `${cipher} accepted`)
  }
})

t.test('TLS 1.3 is unchanged: preferred by default, with each of Node\'s suites', async (t) => {
  for (const port of [ports.ecdsa, ports.rsa]) {
    t.equal((await handshake(port)).protocol, 'TLSv1.3')
    for (const cipher of TLS13) t.same(await handshake(port, { ciphers: cipher }), { protocol: 'TLSv1.3', cipher })
  }
})

t.test('the server chooses the suite, in the order of its own list', async (t) => {
  const offer = 'ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256'
  t.equal((await tls12(ports.ecdsa, offer)).cipher, 'ECDHE-ECDSA-AES128-GCM-SHA256')
})

t.test('a reloaded listener keeps the cipher list and refuses renegotiation still', async (t) => {
  await h.bastion.listeners[0]!.reload!()
  await t.rejects(tls12(ports.ecdsa, 'ECDHE-ECDSA-AES128-SHA'), { code: 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' })
  t.equal((await tls12(ports.ecdsa, 'ECDHE-ECDSA-AES128-GCM-SHA256')).cipher, 'ECDHE-ECDSA-AES128-GCM-SHA256')
  t.match(await renegotiate(ports.ecdsa), /^(error|closed)/)
})

/** Connects over TLS 1.2, asks to renegotiate and says how that ended. */
async function renegotiate (port: number): Promise<string> {
  const s = await new Promise<TLSSocket>((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port, servername: 'localhost', rejectUnauthorized: false, maxVersion: 'TLSv1.2' }, () => resolve(s))
    s.once('error', reject)
  })
  let closed = false
  s.on('close', () => { closed = true })
  const outcome = await new Promise<string>((resolve) => {
    const timer = setTimeout(() => resolve('still open after 10 s'), 10_000)
    const done = (what: string): void => {
      clearTimeout(timer)
      resolve(what)
    }
    s.on('error', (err: NodeJS.ErrnoException) => done(`error ${err.code ?? err.message}`))
    s.on('close', () => done('closed'))
    if (!s.renegotiate({ rejectUnauthorized: false }, (err) => done(err == null ? 'renegotiated' : `error ${(err as NodeJS.ErrnoException).code ?? err.message}`))) done('not started')
  })
  const gone = await until(() => closed)
  s.destroy()
  return gone ? outcome : `${outcome} (socket still open)`
}

t.test('a client cannot renegotiate: the attempt fails, is logged, and the broker keeps serving', async (t) => {
  const before = events(h, 'tls.renegotiation_refused').length
  // Node's client (OpenSSL 3) hears the server's no_renegotiation alert and gives up.
  t.equal(await renegotiate(ports.ecdsa), 'error ERR_SSL_NO_RENEGOTIATION')
  t.equal(await renegotiate(ports.rsa), 'error ERR_SSL_NO_RENEGOTIATION')
  t.ok(await until(() => events(h, 'tls.renegotiation_refused').length > before), 'the refusal is logged')
  t.match(events(h, 'tls.renegotiation_refused')[before], { level: 30, remote: '127.0.0.1', reason: 'NO_RENEGOTIATION' })
  await h.addUser('after1')
  const c = await h.connect('after1')
  t.equal(c.connected, true, 'another client logs in')
})

t.test('openssl s_client\'s R command is refused too', async (t) => {
  const child = spawn('openssl', ['s_client', '-connect', `127.0.0.1:${ports.ecdsa}`, '-servername', 'localhost', '-tls1_2'], { stdio: ['pipe', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill() })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  // The session summary ends with a line of dashes; s_client reads commands after it.
  t.ok(await until(() => /SSL-Session:[\s\S]*\n---\n/.test(out), 10_000), 'handshake done')
  t.match(out, /Cipher is ECDHE-ECDSA-AES128-GCM-SHA256/)
  child.stdin.write('R\n')
  t.ok(await until(() => /no renegotiation/.test(out), 10_000), 'OpenSSL reports the refusal')
  t.match(out, /RENEGOTIATING/)
  t.notMatch(out.slice(out.indexOf('RENEGOTIATING')), /Verify return code/, 'no second handshake completed')
  child.stdin.end()
})

t.test('sslscan finds only ECDHE + AEAD suites on TLS 1.2, Node\'s TLS 1.3 suites, and no TLS 1.0 or 1.1', async (t) => {
  for (const type of ['ecdsa', 'rsa'] as const) {
    // Its renegotiation probe is left out: it reports "not supported" even for a Node server
    // that renegotiates, so s_client and Node's client above are the judges of that.
    const { stdout } = await run('sslscan', ['--no-colour', '--xml=-', '--no-heartbleed', '--no-groups', '--no-renegotiation', '--no-compression',
      '--no-fallback', '--no-check-certificate', '--no-cipher-details', `127.0.0.1:${ports[type]}`], { timeout: 60_000 })
    const accepted = (version: string): string[] => [...stdout.matchAll(/<cipher status="(?:preferred|accepted)" sslversion="([^"]+)"[^>]* cipher="([^"]+)"/g)]
      .filter((m) => m[1] === version).map((m) => m[2]!).sort()
    t.same(accepted('TLSv1.2'), [...ACCEPTED[type]].sort(), `${type}: TLS 1.2 suites`)
    t.same(accepted('TLSv1.3'), [...TLS13].sort(), `${type}: TLS 1.3 suites`)
    for (const v of ['1.0', '1.1']) t.match(stdout, new RegExp(`<protocol type="tls" version="${v.replace('.', '\\.')}" enabled="0"`), `${type}: TLS ${v} off`)
    t.match(stdout, /<protocol type="tls" version="1\.2" enabled="1"/)
  }
})

t.test('300 refused handshakes from one address log at most 2 lines; another address gets its own', async (t) => {
  const lines = (remote: string): Array<Record<string, any>> => events(h, 'tls.handshake_failed').filter((e) => e.remote === remote)
  const attempt = (localAddress: string): Promise<boolean> => tls12(ports.ecdsa, 'ECDHE-ECDSA-AES128-SHA', { localAddress }).then(() => false, () => true)
  let next = 0
  let refused = 0
  // 8 clients at a time, 300 in all, from 127.0.0.2 (all of 127/8 is loopback on Linux).
  await Promise.all(Array.from({ length: 8 }, async () => {
    while (next < 300) {
      next++
      if (await attempt('127.0.0.2')) refused++
    }
  }))
  t.equal(refused, 300, 'every handshake refused')
  t.ok(await attempt('127.0.0.3'), 'the other address is refused too')
  t.ok(await until(() => lines('127.0.0.3').length === 1), 'and has its own line')
  const flood = lines('127.0.0.2')
  t.ok(flood.length >= 1 && flood.length <= 2, `at most 2 lines for 300 refusals (got ${flood.length})`)
  t.match(flood[0], { reason: 'ERR_SSL_NO_SHARED_CIPHER' })
})

/** Collects pino lines as objects. */
function capture (logs: Array<Record<string, any>>): Writable {
  return new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') logs.push(JSON.parse(line))
      cb()
    }
  })
}

t.test('a refusal line says how many were left out since the last one, for both kinds of refusal', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-tls-gate-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  await initCertificates({ outDir: join(dir, 'certs') })
  const config = parseConfig({ listeners: [LOCAL, { ...LOCAL, ca: 'certs/ca.crt', requireClientCertificate: true }], log: { level: 'silent' } }, dir)
  const logs: Array<Record<string, any>> = []
  let now = 0
  let asked = 0
  const inner = createLogGate({ now: () => now })
  // Counts the gate's questions, so the test knows the server has seen every refusal.
  const gate: LogGate = { pass: (key) => { asked++; return inner.pass(key) } }
  const [open, mtls] = await Promise.all(config.listeners.map(async (l) =>
    await startTlsListener(l as TlsListenerConfig, (socket) => socket.destroy(), pino({ level: 'info' }, capture(logs)), undefined, gate)))
  t.teardown(async () => { await open!.close(); await mtls!.close() })
  const line = (msg: string): Array<Record<string, any>> => logs.filter((l) => l.event === 'tls.handshake_failed' && l.msg === msg)

  // A client offering only a refused suite, and a client without a certificate.
  const cbc = async (): Promise<unknown> => await tls12(open!.port, 'ECDHE-ECDSA-AES128-SHA').catch(() => undefined)
  const noCert = async (): Promise<unknown> => await handshake(mtls!.port).catch(() => undefined)
  for (let i = 0; i < 5; i++) await cbc()
  for (let i = 0; i < 3; i++) await noCert()
  t.ok(await until(() => asked === 8), 'the server saw 8 refusals')
  t.equal(line('TLS handshake failed').length, 1)
  t.equal(line('client certificate refused').length, 1)
  t.notOk('suppressed' in line('TLS handshake failed')[0]!, 'the first line has left nothing out')

  now += 60_000
  await cbc()
  await noCert()
  t.ok(await until(() => asked === 10), 'the server saw 2 more')
  t.match(line('TLS handshake failed')[1], { remote: '127.0.0.1', reason: 'ERR_SSL_NO_SHARED_CIPHER', suppressed: 4 })
  t.match(line('client certificate refused')[1], { remote: '127.0.0.1', suppressed: 2 })
})

t.test('a ciphers value OpenSSL does not accept is a one-line config error naming the key', async (t) => {
  const parse = (ciphers: unknown): unknown => parseConfig({ listeners: [LOCAL, { ...LOCAL, ciphers }], log: { level: 'silent' } }, tmpdir())
  const bad: unknown[] = ['NOT-A-CIPHER', ' ', ':', '', 'ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SAH', 'TLS_AES_512_GCM', 42]
  for (const ciphers of bad) {
    t.throws(() => parse(ciphers), { code: 'BASTION_ERR_CONFIG', message: /^config listeners\[1\]\.ciphers: [^\n]+$/ }, JSON.stringify(ciphers))
  }
  t.throws(() => parse('ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-SAH'), { message: /"ECDHE-ECDSA-AES128-SAH"/ }, 'the unknown name is quoted')
  for (const ciphers of ['ECDHE-ECDSA-AES128-SHA', 'ECDHE+AESGCM:!aNULL:@STRENGTH', `${DEFAULT_TLS_CIPHERS}:TLS_AES_128_GCM_SHA256`]) {
    t.doesNotThrow(() => parse(ciphers), ciphers)
  }
  const listeners = (parse(undefined) as { listeners: TlsListenerConfig[] }).listeners
  t.equal(listeners[1]!.ciphers, DEFAULT_TLS_CIPHERS, 'the default when not set')
})
