// Mosquitto password files as they are on disk: users made by Debian's mosquitto_passwd log in
// over TLS with their plain password (or with user|code when a TOTP file is configured), the
// CLI treats the file as read-only, and SIGHUP makes a running broker see changes.
import t from 'tap'
import { execFile, execFileSync, spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import mqtt, { type IClientOptions } from 'mqtt'
import { initCertificates } from '../../src/certs/issue.js'
import { currentCode, newSecret } from '../../src/crypto/totp.js'
import { events, startHarness } from '../helpers/harness.js'

const run = promisify(execFile)
const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
const dir = mkdtempSync(join(tmpdir(), 'bastion-mpw-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
const passwd = join(dir, 'passwd')
execFileSync('mosquitto_passwd', ['-c', '-b', passwd, 'pbkdf', 'pbkdf-password'])
execFileSync('mosquitto_passwd', ['-H', 'sha512', '-b', passwd, 'sha', 'sha-password'])
chmodSync(passwd, 0o600)
const secret = newSecret()
const totpFile = join(dir, 'totp')
writeFileSync(totpFile, `pbkdf:${secret}\n`, { mode: 0o600 })

t.test('users written by mosquitto_passwd ($7$ and $6$) log in with their plain password', async (t) => {
  const h = await startHarness({ auth: { store: { type: 'mosquitto-passwd', path: passwd } } })
  t.teardown(() => h.close())
  for (const [user, password] of [['pbkdf', 'pbkdf-password'], ['sha', 'sha-password']] as const) {
    const c = await mqtt.connectAsync({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5, username: user, password })
    t.equal(c.connected, true, `${user} connected`)
    await c.endAsync()
    t.equal(await h.refused({ username: user, password: 'wrong-password' }), 0x86, `${user} with a wrong password: 0x86`)
    t.equal(await h.refused({ username: user, password: 'wrong-password', protocolVersion: 4 }), 4, `${user} with a wrong password, 3.1.1: 4`)
  }
  t.equal(await h.refused({ username: 'nobody', password: 'pbkdf-password' }), 0x86, 'unknown user: 0x86')
  t.equal(await h.refused({ username: `pbkdf|${currentCode(secret)}`, password: 'pbkdf-password' }), 0x86, 'user|code is not a user name here')
  t.match(events(h, 'login.failed').map((e) => e.reason), ['bad_password', 'bad_password', 'bad_password', 'bad_password', 'unknown_user', 'invalid_username'])
})

t.test('with auth.totp.required and a TOTP file the same users need user|code', async (t) => {
  const h = await startHarness({ auth: { store: { type: 'mosquitto-passwd', path: passwd, totpFile }, totp: { required: true } } })
  t.teardown(() => h.close())
  // One code for both logins: computing it twice can straddle a 30 s step and yield a fresh, valid code.
  const code = currentCode(secret)
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5, username: `pbkdf|${code}`, password: 'pbkdf-password' })
  t.equal(c.connected, true, 'password + code')
  await c.endAsync()
  t.equal(await h.refused({ username: `pbkdf|${code}`, password: 'pbkdf-password' }), 0x86, 'the same code again is a replay')
  t.equal(await h.refused({ username: 'pbkdf', password: 'pbkdf-password' }), 0x86, 'no code: refused')
  t.equal(await h.refused({ username: 'sha|123456', password: 'sha-password' }), 0x86, 'a user without a TOTP secret cannot log in')
  t.match(events(h, 'login.failed').map((e) => e.reason), ['replayed_otp', 'malformed_username', 'totp_not_configured'])
})

t.test('the CLI lists users of the file, refuses to change it, and SIGHUP reloads it in a running broker', async (t) => {
  const certs = join(dir, 'certs')
  await initCertificates({ outDir: certs })
  const cfg = join(dir, 'bastion.yaml')
  writeFileSync(cfg, [
    'listeners:',
    '  - { type: tls, host: 127.0.0.1, port: 0, cert: certs/server.crt, key: certs/server.key }',
    'auth:',
    '  store: { type: mosquitto-passwd, path: passwd }',
    ''
  ].join('\n'))
  const list = await run(process.execPath, [CLI, 'user', 'list', '--config', cfg])
  t.match(list.stdout, /^pbkdf\tenabled/m)
  t.match(list.stdout, /^sha\tenabled/m)
  const add = await run(process.execPath, [CLI, 'user', 'add', 'carol', '--password', 'carol-password', '--config', cfg]).catch((err: any) => err)
  t.equal(add.code, 1)
  t.equal(add.stderr, 'mqtt-bastion: the mosquitto-passwd store is read-only: change it with mosquitto_passwd and reload (SIGHUP)\n')

  const broker = spawn(process.execPath, [CLI, 'start', '--config', cfg], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { broker.kill('SIGKILL') })
  const lines: Array<Record<string, any>> = []
  const waitFor = (event: string, ms = 30_000): Promise<Record<string, any>> => new Promise((resolve, reject) => {
    const found = lines.find((l) => l.event === event)
    if (found !== undefined) { resolve(found); return }
    const timer = setTimeout(() => reject(new Error(`no ${event} within ${ms} ms`)), ms)
    const on = (): void => {
      const l = lines.find((x) => x.event === event)
      if (l !== undefined) { clearTimeout(timer); rl.off('line', on); resolve(l) }
    }
    rl.on('line', on)
  })
  const rl = createInterface({ input: broker.stdout })
  rl.on('line', (l) => lines.push(JSON.parse(l)))
  const ready = await waitFor('broker.ready')
  const port = Number(String(ready.listeners[0]).split(':').at(-1))
  const ca = readFileSync(join(certs, 'ca.crt'))
  const base: IClientOptions = { host: '127.0.0.1', port, protocol: 'mqtts', ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5, connectTimeout: 5000 }
  const tryLogin = (username: string, password: string): Promise<string | number> => new Promise((resolve) => {
    const c = mqtt.connect({ ...base, username, password })
    c.on('connect', () => { c.end(true); resolve('connected') })
    c.on('error', (err: any) => { c.end(true); resolve(err.code) })
  })

  const live = await mqtt.connectAsync({ ...base, username: 'sha', password: 'sha-password' })
  t.teardown(() => live.endAsync(true))
  t.equal(await tryLogin('carol', 'carol-password'), 0x86, 'carol is not in the file yet')
  execFileSync('mosquitto_passwd', ['-b', passwd, 'carol', 'carol-password'])
  execFileSync('mosquitto_passwd', ['-D', passwd, 'pbkdf'])
  broker.kill('SIGHUP')
  await waitFor('reload.ok')
  t.equal(await tryLogin('carol', 'carol-password'), 'connected', 'after SIGHUP carol logs in')
  t.equal(await tryLogin('pbkdf', 'pbkdf-password'), 0x86, 'the removed user no longer does')
  t.equal(live.connected, true, 'a connected client stays up through the reload')

  writeFileSync(passwd, 'carol:plaintext-left-over\n', { mode: 0o600 })
  const failedBefore = lines.filter((l) => l.event === 'reload.failed').length
  broker.kill('SIGHUP')
  await waitFor('reload.failed')
  const failed = lines.filter((l) => l.event === 'reload.failed').slice(failedBefore)[0]
  t.match(failed?.reason, /passwd:1:/, 'the bad file is named with its line')
  t.notMatch(JSON.stringify(lines), /plaintext-left-over|carol-password|sha-password/, 'no password reaches the log')
  t.equal(await tryLogin('carol', 'carol-password'), 'connected', 'the previous users keep serving')
  broker.kill('SIGTERM')
  const code = await new Promise((resolve) => broker.on('exit', resolve))
  t.equal(code, 0, 'stops cleanly')
})
