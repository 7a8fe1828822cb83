// Differential test: the real Mosquitto 2.0.11 and mqtt-bastion load the same acl_file and the
// same password_file (made by the real mosquitto_passwd); the same mosquitto_pub/mosquitto_sub
// commands run against both, and every PUBACK, SUBACK and delivery must agree, except the cells
// in EXPECTED, which differ on purpose (see src/acl/mosquitto-acl.ts).
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import t, { type Test } from 'tap'
import { startHarness } from '../helpers/harness.js'
import { accepting, freePort } from '../helpers/ports.js'

const ACL = fileURLToPath(new URL('../fixtures/mosquitto-diff.acl', import.meta.url))
const CONCURRENCY = 4

/** Login user -> the client id it connects with, which %c patterns see. */
const CLIENT_IDS: Record<string, string> = {
  alice: 'alice-dev', bob: 'bob-dev', erin: 'erin-dev', frank: 'frank/x', gina: 'gina+1', carol: 'carol-obs', dave: 'dave-pub'
}
const password = (user: string): string => `plain-${user}-password`
const WRITERS = ['alice', 'bob', 'erin', 'frank', 'gina', 'dave']
const READERS = ['alice', 'bob', 'erin', 'frank', 'gina']
const TOPICS = [
  'alice/data', 'alice/secret', 'bob/data', 'sensors/bob/temp', 'cmd/lights',
  'home/alice/x', 'home/alice/locked', 'home/alice/private', 'home/bob/locked', 'home/erin/x', 'home/frank/x', 'home/gina/x',
  'clients/erin-dev/out', 'clients/erin-dev/in', 'clients/frank/x/out', 'clients/frank/x/in',
  'public/anon', 'other/topic', '$SYS/broker/test'
]
const FILTERS = [...TOPICS, 'alice/+', 'sensors/+/temp', 'home/#', 'clients/+/in', '$SYS/#', '$SYS/broker/uptime']

type Broker = 'mosquitto' | 'bastion'
type Cells = Map<string, string>

// Differences on purpose, each cell as [mosquitto, bastion].
const EXPECTED = new Map<string, [string, string, string]>()
const FRANK = 'client id "frank/x" has a /: bastion gives it no pattern access (Mosquitto refuses only + #)'
for (const topic of ['home/frank/x', 'clients/frank/x/out']) EXPECTED.set(`write frank ${topic}`, ['ok seen', 'denied', FRANK])
for (const topic of ['home/frank/x', 'clients/frank/x/in']) EXPECTED.set(`read frank ${topic}`, ['got', '-', FRANK])
for (const user of READERS) {
  for (const f of FILTERS.filter((x) => x.startsWith('$'))) {
    EXPECTED.set(`subscribe ${user} ${f}`, ['1', '135', 'allowSys is false: $ filters are refused (Mosquitto grants every subscription)'])
  }
}
EXPECTED.set('read alice $SYS', ['got', '-', 'alice may read $SYS/broker/# in the file; allowSys is false here'])

interface Run { code: number | null, stdout: string, stderr: string }
function run (args: readonly string[], cmd: string, timeout = 8000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, stdout, stderr })
    })
  })
}

/** Runs `jobs` with at most CONCURRENCY at a time. */
async function pool (jobs: Array<() => Promise<void>>): Promise<void> {
  const queue = [...jobs]
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    for (let job = queue.shift(); job !== undefined; job = queue.shift()) await job()
  }))
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

function login (port: number, user: string): string[] {
  return ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(port), '-u', user, '-P', password(user), '-i', CLIENT_IDS[user] as string]
}

const children = new Set<ChildProcess>()
t.teardown(() => { for (const c of children) c.kill('SIGKILL') })

interface Subscriber {
  /** The SUBACK codes, in filter order. */
  ready: Promise<string[]>
  /** Resolves once a message on `topic` has arrived (false after `ms`). */
  until: (topic: string, ms: number) => Promise<boolean>
  /** Ends the client; the messages it printed, as [topic, payload]. */
  stop: () => Promise<Array<[string, string]>>
}

/** mosquitto_sub -d, kept running while the test publishes. */
function subscriber (port: number, user: string, filters: readonly string[]): Subscriber {
  const args = [...login(port, user), '-q', '1', '-d', '-F', 'MSG|%t|%p', ...filters.flatMap((f) => ['-t', f])]
  // stdbuf: mosquitto_sub block-buffers a piped stdout, which would hide the SUBACK until exit.
  const child = spawn('stdbuf', ['-oL', 'mosquitto_sub', ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  let out = ''
  let err = ''
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const ready = new Promise<string[]>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${user}: no SUBACK in 5 s: ${out}${err}`)) }, 5000)
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const m = /Subscribed \(mid: \d+\): ([\d, ]+)/.exec(out)
      if (m !== null) { clearTimeout(timer); resolve((m[1] as string).split(', ').map((s) => s.trim())) }
    })
    void exited.then(() => { clearTimeout(timer); children.delete(child); reject(new Error(`${user}: mosquitto_sub exited: ${out}${err}`)) })
  })
  ready.catch(() => {})
  return {
    ready,
    async until (topic, ms) {
      const deadline = Date.now() + ms
      while (!out.includes(`MSG|${topic}|`)) {
        if (Date.now() > deadline) return false
        await sleep(50)
      }
      return true
    },
    async stop () {
      child.kill('SIGTERM')
      await Promise.race([exited, sleep(3000).then(() => child.kill('SIGKILL'))])
      return out.split('\n').filter((l) => l.startsWith('MSG|')).map((l) => {
        const [, topic, payload] = l.split('|')
        return [topic as string, payload as string]
      })
    }
  }
}

function pubResult (r: Run): string {
  const puback = /received PUBACK \(Mid: \d+, RC:(\d+)\)/.exec(r.stdout)
  // 0x10: no matching subscribers, still a success.
  if (puback !== null) return puback[1] === '0' || puback[1] === '16' ? 'ok' : puback[1] === '135' ? 'denied' : `puback ${puback[1]}`
  const connack = /received CONNACK \((\d+)\)/.exec(r.stdout)
  if (connack !== null && connack[1] !== '0') return `connack ${connack[1]}`
  return `no puback (exit ${r.code})`
}

/** Every writer publishes QoS 1 to every topic; carol (reads #) shows what got through. */
async function writePhase (ports: Record<Broker, number>): Promise<Record<Broker, Cells>> {
  const cells: Record<Broker, Cells> = { mosquitto: new Map(), bastion: new Map() }
  const observers = { mosquitto: subscriber(ports.mosquitto, 'carol', ['#']), bastion: subscriber(ports.bastion, 'carol', ['#']) }
  await Promise.all([observers.mosquitto.ready, observers.bastion.ready])
  const jobs: Array<() => Promise<void>> = []
  // One client id is used by one process at a time, or the broker would take the session over.
  for (const broker of ['mosquitto', 'bastion'] as const) {
    for (const user of WRITERS) {
      jobs.push(async () => {
        for (const topic of TOPICS) {
          const r = await run([...login(ports[broker], user), '-q', '1', '-d', '-t', topic, '-m', user], 'mosquitto_pub')
          cells[broker].set(`write ${user} ${topic}`, pubResult(r))
        }
      })
    }
  }
  await pool(jobs)
  // Every publish above has its PUBACK; once a later one reaches carol, the others have too.
  await Promise.all((['mosquitto', 'bastion'] as const).map(async (broker) => {
    await run([...login(ports[broker], 'dave'), '-q', '1', '-t', 'done/write', '-m', 'dave'], 'mosquitto_pub')
    await observers[broker].until('done/write', 5000)
  }))
  await sleep(200)
  for (const broker of ['mosquitto', 'bastion'] as const) {
    for (const [topic, user] of await observers[broker].stop()) {
      const key = `write ${user} ${topic}`
      cells[broker].set(key, `${cells[broker].get(key) ?? '?'} seen`)
    }
  }
  return cells
}

/** Every reader subscribes to FILTERS; dave writes each topic once; who got what. */
async function readPhase (ports: Record<Broker, number>): Promise<Record<Broker, Cells>> {
  const cells: Record<Broker, Cells> = { mosquitto: new Map(), bastion: new Map() }
  await Promise.all((['mosquitto', 'bastion'] as const).map(async (broker) => {
    const subs = READERS.map((user) => ({ user, sub: subscriber(ports[broker], user, FILTERS) }))
    for (const { user, sub } of subs) {
      const codes = await sub.ready
      FILTERS.forEach((f, i) => cells[broker].set(`subscribe ${user} ${f}`, codes[i] ?? 'none'))
    }
    for (const topic of TOPICS) await run([...login(ports[broker], 'dave'), '-q', '1', '-t', topic, '-m', 'dave'], 'mosquitto_pub')
    // A last message alice may read (alice/+) marks the end of the deliveries.
    await run([...login(ports[broker], 'dave'), '-q', '1', '-t', 'alice/done', '-m', 'dave'], 'mosquitto_pub')
    await subs[0]?.sub.until('alice/done', 5000)
    await sleep(200)
    for (const { user, sub } of subs) {
      const got = new Set((await sub.stop()).map(([topic]) => topic))
      for (const topic of TOPICS.filter((x) => !x.startsWith('$'))) cells[broker].set(`read ${user} ${topic}`, got.has(topic) ? 'got' : '-')
      // Mosquitto's own $SYS/broker/... tree: only whether any of it arrived is comparable.
      cells[broker].set(`read ${user} $SYS`, [...got].some((x) => x.startsWith('$SYS/')) ? 'got' : '-')
    }
  }))
  return cells
}

/** Cells where the brokers disagree, and expected differences that did not happen. */
function compare (cells: Record<Broker, Cells>): string[] {
  const rows: string[] = []
  for (const [key, m] of cells.mosquitto) {
    const b = cells.bastion.get(key) ?? 'missing'
    const expected = EXPECTED.get(key)
    const ok = expected === undefined ? m === b : m === expected[0] && b === expected[1]
    if (!ok) rows.push(`${key.padEnd(40)} | mosquitto: ${m.padEnd(12)} | bastion: ${b.padEnd(12)}${expected === undefined ? '' : ` | expected ${expected[0]} / ${expected[1]}`}`)
  }
  return rows.sort()
}

// --- the two brokers ------------------------------------------------------------------------
const dir = mkdtempSync(join(tmpdir(), 'mosquitto-diff-'))
const passwd = join(dir, 'passwd')
writeFileSync(passwd, '')
chmodSync(passwd, 0o600)
for (const user of Object.keys(CLIENT_IDS)) {
  const r = await run(['-b', passwd, user, password(user)], 'mosquitto_passwd')
  if (r.code !== 0) throw new Error(`mosquitto_passwd failed: ${r.stderr}`)
}

const mosquittoPort = await freePort()
const conf = join(dir, 'mosquitto.conf')
writeFileSync(conf, [
  `listener ${mosquittoPort} 127.0.0.1`, 'allow_anonymous false', `password_file ${passwd}`, `acl_file ${ACL}`,
  'persistence false', `log_dest file ${join(dir, 'mosquitto.log')}`, 'log_type all',
  // Started as root, Mosquitto would switch to user "mosquitto", who cannot read this folder.
  `user ${userInfo().username}`
].join('\n') + '\n')
const mosquitto = spawn('/usr/sbin/mosquitto', ['-c', conf], { stdio: 'ignore' })
t.teardown(() => { mosquitto.kill('SIGTERM') })
await accepting(mosquittoPort, 5000)

const h = await startHarness({
  listeners: [
    { type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', ca: 'certs/ca.crt' },
    { type: 'tcp', host: '127.0.0.1', port: 0 }
  ],
  auth: { store: { type: 'mosquitto-passwd', path: passwd } },
  acl: { policy: 'mosquitto-acl', file: ACL }
})
t.teardown(async () => {
  await h.close()
  rmSync(dir, { recursive: true, force: true })
})
const ports: Record<Broker, number> = { mosquitto: mosquittoPort, bastion: h.bastion.listeners.find((l) => l.type === 'tcp')?.port as number }

function report (t: Test, phase: string, cells: Record<Broker, Cells>): void {
  const rows = compare(cells)
  if (rows.length > 0) {
    t.comment(`${phase}: ${rows.length} of ${cells.mosquitto.size} cells differ (Mosquitto's log: ${join(dir, 'mosquitto.log')}, removed at the end)`)
    for (const row of rows) t.comment(row)
  }
  t.same(rows, [], `${phase}: ${cells.mosquitto.size} cells, every difference is an expected one`)
  t.equal(cells.bastion.size, cells.mosquitto.size, 'both brokers answered every cell')
}

t.test('writes: PUBACK codes and what a reader of # sees agree with Mosquitto', async (t) => {
  const cells = await writePhase(ports)
  report(t, 'write', cells)
  const allowed = [...cells.mosquitto.values()].filter((v) => v === 'ok seen').length
  const denied = [...cells.mosquitto.values()].filter((v) => v === 'denied').length
  t.ok(allowed >= 20 && denied >= 40, `the matrix has both answers (${allowed} allowed, ${denied} denied)`)
  t.equal(cells.bastion.get('write alice alice/secret'), 'denied', 'a deny line beats readwrite')
  t.equal(cells.bastion.get('write erin clients/erin-dev/out'), 'ok seen', '%c pattern')
  t.equal(cells.bastion.get('write gina home/gina/x'), 'denied', 'client id with + gets no pattern access')
  t.equal(cells.bastion.get('write alice home/alice/private'), 'denied', 'a user deny beats a pattern grant')
  t.equal(cells.bastion.get('write bob home/bob/locked'), 'ok seen', 'a pattern deny does not beat a user grant')
})

t.test('subscriptions and deliveries agree with Mosquitto', async (t) => {
  const cells = await readPhase(ports)
  const subs = new Map([...cells.mosquitto].filter(([k]) => k.startsWith('subscribe')))
  report(t, 'subscribe', { mosquitto: subs, bastion: new Map([...cells.bastion].filter(([k]) => k.startsWith('subscribe'))) })
  const reads = new Map([...cells.mosquitto].filter(([k]) => k.startsWith('read')))
  report(t, 'read', { mosquitto: reads, bastion: new Map([...cells.bastion].filter(([k]) => k.startsWith('read'))) })
  const got = [...reads.values()].filter((v) => v === 'got').length
  t.ok(got >= 10 && got < reads.size - 20, `deliveries are neither all nor none (${got} of ${reads.size})`)
  t.equal(cells.mosquitto.get('read bob $SYS'), '-', 'Mosquitto itself sends no $SYS to a user the file does not grant it')
})
