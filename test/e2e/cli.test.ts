// The product as a new user meets it: the CLI, then clients we did not write
// (Debian's mosquitto_pub/mosquitto_sub, Python's paho-mqtt with pyotp) and mqtt.js.
import t from 'tap'
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import mqtt from 'mqtt'

const run = promisify(execFile)
const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
const PAHO = join(process.cwd(), 'test', 'fixtures', 'paho_v5_client.py')
const dir = mkdtempSync(join(tmpdir(), 'bastion-cli-'))
const cfg = join(dir, 'bastion.yaml')
const certs = join(dir, 'certs')
const ca = join(certs, 'ca.crt')
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

async function cli (...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { cwd: dir, env: { ...process.env, BASTION_CONFIG: '' } })
    return { ...r, code: 0 }
  } catch (err: any) {
    return { stdout: err.stdout, stderr: err.stderr, code: err.code }
  }
}

async function tool (cmd: string, args: string[], timeout = 15000): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const r = await run(cmd, args, { timeout })
    return { ...r, code: 0 }
  } catch (err: any) {
    return { stdout: err.stdout ?? '', stderr: err.stderr ?? '', code: typeof err.code === 'number' ? err.code : -1 }
  }
}

let broker: ChildProcess | undefined
let port = 0
const logLines: string[] = []
t.teardown(() => { broker?.kill('SIGKILL') })

t.test('certs init writes a CA and a server certificate with private keys', async (t) => {
  const r = await cli('certs', 'init', '--out', certs)
  t.equal(r.code, 0, r.stderr)
  t.equal(statSync(join(certs, 'server.key')).mode & 0o777, 0o600)
  t.equal(statSync(join(certs, 'ca.key')).mode & 0o777, 0o600)
  const again = await cli('certs', 'init', '--out', certs)
  t.equal(again.code, 1, 'refuses to overwrite')
  t.match(again.stderr, /^mqtt-bastion: .*exists/)
  t.equal(again.stderr.trim().split('\n').length, 1, 'one line')
})

t.test('user add prints the secret, an otpauth URI and a QR code only on a terminal or with --qr', async (t) => {
  writeFileSync(cfg, [
    'listeners:',
    '  - type: tls',
    '    host: 127.0.0.1',
    '    port: 0',
    '    cert: certs/server.crt',
    '    key: certs/server.key',
    'auth:',
    '  store: { type: file, path: data/users.json }',
    'log: { level: debug }',
    ''
  ].join('\n'))
  const r = await cli('user', 'add', 'alice', '--password', 'alice-password', '--config', cfg)
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /TOTP secret: [A-Z2-7]{32}/)
  t.match(r.stdout, /otpauth:\/\/totp\/mqtt-bastion:alice\?secret=[A-Z2-7]+&issuer=mqtt-bastion/)
  t.notMatch(r.stdout, /[▀▄█]|\u001b/, 'into a pipe: no QR code and no colour escapes')
  t.match(r.stdout, /QR code: run this on a terminal, or add --qr/)
  const qr = await cli('user', 'rotate-totp', 'alice', '--qr', '--config', cfg)
  t.match(qr.stdout, /[▀▄█]/, '--qr: a QR code drawn with block characters')
  // On a terminal (a pseudo-terminal from util-linux's script), drawn without being asked.
  const tty = spawnSync('script', ['-qec', `${process.execPath} ${CLI} user rotate-totp alice --config ${cfg}`, '/dev/null'], { cwd: dir, encoding: 'utf8', timeout: 30_000, env: { ...process.env, BASTION_CONFIG: '' } })
  t.equal(tty.status, 0, tty.stderr)
  t.match(tty.stdout, /[▀▄█]/, 'on a terminal: the QR code')
  t.equal(statSync(join(dir, 'data', 'users.json')).mode & 0o777, 0o600)
  for (const u of ['bob', 'carol']) {
    const j = await cli('user', 'add', u, '--password', `${u}-password`, '--json', '--config', cfg)
    t.equal(j.code, 0, j.stderr)
    t.match(JSON.parse(j.stdout), { user: u, totpSecret: /^[A-Z2-7]+$/ })
  }
  const piped = spawnSync(process.execPath, [CLI, 'user', 'add', 'dan', '--json', '--config', cfg], { cwd: dir, input: 'dan-password\n', encoding: 'utf8' })
  t.equal(piped.status, 0, 'the password can come from piped standard input')
  t.notMatch(piped.stdout + piped.stderr, /dan-password/, 'and is not echoed')
  t.match((await cli('user', 'add', 'alice', '--password', 'whatever-pw', '--config', cfg)).stderr, /already exists/)
  t.match((await cli('user', 'add', 'bad/name', '--password', 'whatever-pw', '--config', cfg)).stderr, /invalid user name "bad\/name"/)
  t.match((await cli('user', 'add', 'eve', '--password', 'short', '--config', cfg)).stderr, /at least 8/)
  t.match((await cli('user', 'list', '--config', cfg)).stdout, /alice\tenabled/)
  t.equal((await cli('user', 'frobnicate', 'x')).code, 2, 'usage errors exit 2')
  const bare = await cli()
  t.equal(bare.code, 2, 'no command is a usage error')
  t.match(bare.stderr, /Usage: mqtt-bastion <command>/, 'and the usage goes to stderr')
  t.equal((await cli('--help')).code, 0, '--help exits 0')
  t.match((await cli('config', 'check', '--config', cfg)).stdout, /config ok/)
  const badCfg = join(dir, 'bad.yaml')
  writeFileSync(badCfg, 'listeners:\n  - type: tls\n    prot: 1\n')
  const bad = await cli('config', 'check', '--config', badCfg)
  t.equal(bad.code, 1)
  t.match(bad.stderr, /config listeners\[0\]\.prot: unknown key/)
})

t.test('start runs the broker and logs where it listens', async (t) => {
  broker = spawn(process.execPath, [CLI, 'start', '--config', cfg], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  const rl = createInterface({ input: broker.stdout! })
  port = await new Promise<number>((resolve, reject) => {
    // A bound, not a measurement: 10 s was too short for a loaded 2-core CI machine.
    const timer = setTimeout(() => reject(new Error('broker not ready in 45 s')), 45000)
    rl.on('line', (line) => {
      logLines.push(line)
      const e = JSON.parse(line)
      if (e.event === 'broker.ready') { clearTimeout(timer); resolve(Number(String(e.listeners[0]).split(':').pop())) }
    })
  })
  t.ok(port > 0)
})

t.test('mosquitto_sub receives what mosquitto_pub sends with user|$(user otp) logins', async (t) => {
  const otp = async (u: string): Promise<string> => (await cli('user', 'otp', u, '--config', cfg)).stdout.trim()
  const common = ['-h', '127.0.0.1', '-p', String(port), '--cafile', ca, '-V', 'mqttv5']
  const sub = tool('mosquitto_sub', [...common, '-u', `alice|${await otp('alice')}`, '-P', 'alice-password', '-t', 'metrics/alice/#', '-C', '1', '-W', '10', '-v'])
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const pub = await tool('mosquitto_pub', [...common, '-u', `alice|${await otp('alice')}`, '-P', 'alice-password', '-q', '1', '-t', 'metrics/alice/Temperatura', '-m', '{"value":22.5}'])
  t.equal(pub.code, 0, pub.stderr)
  const got = await sub
  t.equal(got.code, 0, got.stderr)
  t.equal(got.stdout.trim(), 'metrics/alice/Temperatura {"value":22.5}')

  const denied = await tool('mosquitto_pub', [...common, '-u', `bob|${await otp('bob')}`, '-P', 'bob-password', '-q', '1', '-t', 'metrics/alice/Temperatura', '-m', 'spoof'])
  t.match(denied.stderr, /not authori[sz]ed/i, 'mosquitto_pub reports the refusal')
  const wrong = await tool('mosquitto_pub', [...common, '-u', 'carol|000000', '-P', 'carol-password', '-t', 'metrics/carol/Estado', '-m', 'x'])
  t.not(wrong.code, 0, 'a wrong code is refused')
  t.match(wrong.stderr, /bad user name or password/i)
  const v311 = await tool('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(port), '--cafile', ca, '-V', 'mqttv311', '-u', 'carol|000000', '-P', 'carol-password', '-t', 'metrics/carol/Estado', '-m', 'x'])
  t.not(v311.code, 0, 'and over 3.1.1')
})

t.test('user otp skips codes already used and says how long to wait when none is left', async (t) => {
  const file = join(dir, 'data', 'users.json')
  const doc = JSON.parse(readFileSync(file, 'utf8'))
  const alice = doc.users.find((u: any) => u.username === 'alice')
  t.ok(alice.lastStep > 0, 'the broker recorded the steps it accepted')
  // Pretend codes up to 5 steps ahead were used: nothing inside the window is left.
  alice.lastStep = Math.floor(Date.now() / 30_000) + 5
  writeFileSync(file, JSON.stringify(doc))
  const r = await cli('user', 'otp', 'alice', '--config', cfg)
  t.equal(r.code, 1)
  t.match(r.stderr, /used already; try again in \d+ s/)
})

t.test('Python paho-mqtt (MQTT 5) with a pyotp code sees the right reason codes', async (t) => {
  const users = JSON.parse(readFileSync(join(dir, 'data', 'users.json'), 'utf8')).users as Array<{ username: string; totpSecret: string }>
  const secret = users.find((u) => u.username === 'carol')!.totpSecret
  const r = await tool('/usr/bin/python3', [PAHO, '127.0.0.1', String(port), ca, 'carol', 'carol-password', secret])
  t.equal(r.code, 0, r.stderr)
  const res = JSON.parse(r.stdout)
  t.equal(res.connack, 0)
  t.same(res.suback, [1, 0x87], 'own branch granted QoS 1, metrics/# refused with 0x87')
  t.same(res.puback, { allowed: 0, refused: 0x87 })
  t.same(res.received, [{ topic: 'metrics/carol/Temperatura', payload: '{"value": 21.5}' }])
})

t.test('SIGTERM disconnects MQTT 5 clients with 0x8B and exits 0', async (t) => {
  const otp = (await cli('user', 'otp', 'bob', '--config', cfg)).stdout.trim()
  const c = await mqtt.connectAsync({ host: '127.0.0.1', port, protocol: 'mqtts', ca: readFileSync(ca), servername: 'localhost', protocolVersion: 5, reconnectPeriod: 0, username: `bob|${otp}`, password: 'bob-password' })
  const disconnect = new Promise<any>((resolve) => c.once('disconnect', resolve))
  const exited = new Promise<number | null>((resolve) => broker!.once('exit', (code) => resolve(code)))
  const started = Date.now()
  broker!.kill('SIGTERM')
  t.equal((await disconnect)?.reasonCode, 0x8b)
  t.equal(await exited, 0)
  t.ok(Date.now() - started < 5000, 'within 5 s')
  c.end(true)
  const text = logLines.join('\n')
  t.notMatch(text, /password/i.test(text) ? /alice-password|bob-password|carol-password/ : /$^/, 'no password in the log')
})
