// The device client as cron runs it: the built CLI as a child process against a real TLS broker.
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { chmodSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:net'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import { nextMessage, PASSWORD, startHarness, type Harness } from '../helpers/harness.js'

const run = promisify(execFile)
const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')

interface Result { stdout: string; stderr: string; code: number; ms: number }

async function device (...args: string[]): Promise<Result> {
  const start = Date.now()
  try {
    const r = await run(process.execPath, [CLI, 'device', ...args], { timeout: 30000 })
    return { ...r, code: 0, ms: Date.now() - start }
  } catch (err: any) {
    return { stdout: err.stdout ?? '', stderr: err.stderr ?? '', code: typeof err.code === 'number' ? err.code : -1, ms: Date.now() - start }
  }
}

/** Writes a device config (and its 0600 secret files) into the harness folder; returns its path. */
function deviceConfig (h: Harness, name: string, user: string, secret: string, extra: string[] = [], port = h.port): string {
  writeFileSync(join(h.dir, `${name}.password`), `${PASSWORD}\n`, { mode: 0o600 })
  writeFileSync(join(h.dir, `${name}.totp`), `${secret}\n`, { mode: 0o600 })
  const file = join(h.dir, `${name}.yaml`)
  writeFileSync(file, [
    `url: mqtts://127.0.0.1:${port}`,
    'ca: certs/ca.crt',
    `user: ${user}`,
    `passwordFile: ${name}.password`,
    `totpSecretFile: ${name}.totp`,
    ...extra,
    ''
  ].join('\n'))
  return file
}

/**
 * Collects the messages a client receives: from now until `done` settles, then for `quietMs`
 * more (a late one, e.g. a will, would show up), at most `maxMs` in all.
 */
async function collect (c: any, done: Promise<unknown>, quietMs = 1000, maxMs = 30_000): Promise<Array<{ topic: string; payload: string }>> {
  const got: Array<{ topic: string; payload: string }> = []
  const on = (topic: string, payload: Buffer): void => { got.push({ topic, payload: payload.toString() }) }
  c.on('message', on)
  const cap = new Promise((resolve) => setTimeout(resolve, maxMs))
  await Promise.race([done.catch(() => {}), cap])
  await new Promise((resolve) => setTimeout(resolve, quietMs))
  c.off('message', on)
  return got
}

// Replay protection on: each login here uses a step no other login used.
const strict = await startHarness()
t.teardown(() => strict.close())
const aliceSecret = await strict.addUser('alice')
await strict.addUser('carol')

// Several runs share a 30 s step here, and Humedad is not a leaf the broker accepts.
const relaxed = await startHarness({
  auth: { totp: { replayProtection: false } },
  acl: { policy: 'metrics', metrics: { prefix: 'metrics', leaves: ['Temperatura', 'Estado'] } }
})
t.teardown(() => relaxed.close())
const devSecret = await relaxed.addUser('dev')

t.test('publish delivers each reading as {"value":...} at QoS 1, prints nothing and exits 0', async (t) => {
  // The watcher takes the previous step's code so the device's current one is still unused.
  await strict.freshStep()
  const watcher = await strict.connect('alice', { offset: -1 })
  await watcher.subscribeAsync('metrics/alice/#', { qos: 1 })
  let finished: (v: unknown) => void = () => {}
  const got = collect(watcher, new Promise((resolve) => { finished = resolve }))
  const r = await device('publish', '--config', deviceConfig(strict, 'alice', 'alice', aliceSecret), '--temperature', '22.5', '--humidity', '41', '--status', 'ok')
  finished(r)
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, '', 'nothing on stdout')
  t.equal(r.stderr, '', 'nothing on stderr')
  const messages = await got
  t.same(messages.sort((a, b) => a.topic.localeCompare(b.topic)), [
    { topic: 'metrics/alice/Estado', payload: '{"value":"ok"}' },
    { topic: 'metrics/alice/Humedad', payload: '{"value":41}' },
    { topic: 'metrics/alice/Temperatura', payload: '{"value":22.5}' }
  ], 'the readings and no will: the device disconnected cleanly')
  t.notOk(strict.logs.some((l) => JSON.stringify(l).includes(aliceSecret)), 'the secret never reaches the broker logs')
})

t.test('a wrong TOTP secret is a refused login: exit 1 and one line with the CONNACK code', async (t) => {
  const r = await device('publish', '--config', deviceConfig(strict, 'carol', 'carol', 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'), '--temperature', '20')
  t.equal(r.code, 1)
  t.equal(r.stderr, 'mqtt-bastion: login refused: 0x86 bad user name or password\n')
  t.equal(r.stdout, '')
})

t.test('a reading the policy refuses fails the run even when the others were accepted', async (t) => {
  const r = await device('publish', '--config', deviceConfig(relaxed, 'denied', 'dev', devSecret), '--temperature', '19', '--humidity', '50')
  t.equal(r.code, 1)
  t.equal(r.stderr, 'mqtt-bastion: publish to metrics/dev/Humedad refused: 0x87 not authorized\n')
})

t.test('a will outside the policy (a wrong prefix) is named: not a password problem', async (t) => {
  const r = await device('publish', '--config', deviceConfig(relaxed, 'wrongprefix', 'dev', devSecret, ['prefix: other']), '--temperature', '19')
  t.equal(r.code, 1)
  t.equal(r.stderr, 'mqtt-bastion: login refused: 0x87 not authorized (the will topic other/dev/Estado is outside what dev may publish: check prefix)\n')
  t.match(relaxed.logs.filter((l) => l.event === 'login.failed').at(-1), { reason: 'will_denied' })
})

t.test('a broker that is down fails within the timeout with the socket error', async (t) => {
  const closed = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port
      s.close(() => { resolve(port) })
    })
  })
  const r = await device('publish', '--config', deviceConfig(relaxed, 'down', 'dev', devSecret, ['timeout: 30'], closed), '--temperature', '19')
  t.equal(r.code, 1)
  t.equal(r.stderr, `mqtt-bastion: cannot connect to mqtts://127.0.0.1:${closed}: ECONNREFUSED\n`)
  t.ok(r.ms < 20000, `done in ${r.ms} ms, without waiting for its 30 s timeout`)
})

t.test('a broker that never answers is a timeout named after the missing packet', async (t) => {
  const sockets: any[] = []
  const silent: Server = createServer((s) => { sockets.push(s) })
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of sockets) s.destroy(); silent.close() })
  const port = (silent.address() as { port: number }).port
  const r = await device('publish', '--config', deviceConfig(relaxed, 'silent', 'dev', devSecret, ['timeout: 2'], port), '--temperature', '19')
  t.equal(r.code, 1)
  t.equal(r.stderr, `mqtt-bastion: no CONNACK from mqtts://127.0.0.1:${port} within 2 s\n`)
  // Bounds, not a speed target: it waited for its 2 s timeout, and then gave up by itself
  // (the upper bound is loose so a loaded CI machine cannot fail it).
  t.ok(r.ms >= 1900 && r.ms < 20000, `done in ${r.ms} ms, after the 2 s timeout and not never`)
})

t.test('the will reaches a subscriber when the device process is killed mid-session', async (t) => {
  const watcher = await relaxed.connect('dev')
  await watcher.subscribeAsync('metrics/dev/Estado', { qos: 1 })
  const child = spawn(process.execPath, [CLI, 'device', 'subscribe', '--config', deviceConfig(relaxed, 'killed', 'dev', devSecret), '--verbose'], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill('SIGKILL') })
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('device subscribe not subscribed within 10 s')) }, 10000)
    createInterface({ input: child.stderr }).on('line', (line) => {
      if (line.startsWith('subscribed to metrics/dev/#')) { clearTimeout(timer); resolve() }
    })
  })
  const will = nextMessage(watcher, 5000)
  child.kill('SIGKILL')
  const m = await will
  t.equal(m?.topic, 'metrics/dev/Estado')
  t.equal(m?.payload, 'unsafe_disconnection', 'the device\'s own will, not the server will')
  t.equal(m?.packet?.retain, false)
})

t.test('subscribe --count 1 prints one "topic payload" line and exits 0', async (t) => {
  const pub = await relaxed.connect('dev')
  const child = spawn(process.execPath, [CLI, 'device', 'subscribe', '--config', deviceConfig(relaxed, 'sub', 'dev', devSecret), '--count', '1', '--verbose'], { stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { child.kill('SIGKILL') })
  let stdout = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error('device subscribe not subscribed within 10 s')) }, 10000)
    createInterface({ input: child.stderr }).on('line', (line) => {
      if (line.startsWith('subscribed to')) { clearTimeout(timer); resolve() }
    })
  })
  await pub.publishAsync('metrics/dev/Temperatura', '{"value":21}', { qos: 1 })
  t.equal(await exited, 0)
  t.equal(stdout, 'metrics/dev/Temperatura {"value":21}\n')
})

t.test('subscribe to a filter outside the user\'s branch exits 1 with the SUBACK code', async (t) => {
  const watcher = await relaxed.connect('dev')
  await watcher.subscribeAsync('metrics/dev/Estado', { qos: 1 })
  const r = await device('subscribe', '--config', deviceConfig(relaxed, 'subdenied', 'dev', devSecret), '--topic', 'metrics/#')
  t.equal(r.code, 1)
  t.equal(r.stderr, 'mqtt-bastion: subscribe to metrics/# refused: 0x87 not authorized\n')
  t.equal(await nextMessage(watcher, 500), undefined, 'it disconnected cleanly: no will')
})

t.test('a group-readable password file is refused before any connection, naming the chmod', async (t) => {
  const file = deviceConfig(relaxed, 'open', 'dev', devSecret)
  chmodSync(join(relaxed.dir, 'open.password'), 0o640)
  const r = await device('publish', '--config', file, '--temperature', '19')
  t.equal(r.code, 1)
  t.match(r.stderr, /^mqtt-bastion: device config passwordFile .*open\.password is readable by group or others \(mode 640\); fix it with: chmod 600 .*open\.password\n$/)
})

t.test('config and flag mistakes name the key or flag and never reach the broker', async (t) => {
  const file = deviceConfig(relaxed, 'typo', 'dev', devSecret, ['tiemout: 5'])
  const r = await device('publish', '--config', file, '--temperature', '19')
  t.equal(r.code, 1)
  t.match(r.stderr, /^mqtt-bastion: device config tiemout: unknown key/)
  const inline = join(relaxed.dir, 'inline.yaml')
  writeFileSync(inline, `url: mqtts://127.0.0.1:${relaxed.port}\nca: certs/ca.crt\nuser: dev\npassword: ${PASSWORD}\n`, { mode: 0o644 })
  const open = await device('publish', '--config', inline, '--temperature', '19')
  t.equal(open.code, 1)
  t.match(open.stderr, /holds password\) .* is readable by group or others/)
  t.notMatch(open.stderr, PASSWORD)
  const usage = await device('publish', '--config', file, '--temperature', 'warm')
  t.equal(usage.code, 2)
  t.equal(usage.stderr, 'mqtt-bastion device publish: --temperature must be a number such as 22.5, got "warm" (see mqtt-bastion device --help)\n')
  t.equal((await device('publish', '--config', file)).code, 2, 'no reading is a usage error')
})
