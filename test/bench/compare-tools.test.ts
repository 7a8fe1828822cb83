// The compare bench's tooling that runs without brokers: the CPU profile summary and the
// argument checks of run.mjs (--only, --baseline), which must refuse bad input in one line
// before anything is started.
import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import mqtt from 'mqtt'

const run = promisify(execFile)
const SUMMARY = join(process.cwd(), 'bench', 'compare', 'profile-summary.mjs')
const RUN = join(process.cwd(), 'bench', 'compare', 'run.mjs')

async function fails (args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, args, { timeout: 30_000 })
  } catch (err) {
    const e = err as { code: number; stderr: string }
    return { code: e.code, stderr: e.stderr }
  }
  throw new Error(`${args.join(' ')} succeeded`)
}

/** A profile of 10 s: 1 s of start-up in Node's loader, then idle, aedes, mqtt-packet (both copies) and writev. */
function profile (dir: string): string {
  const frame = (id: number, functionName: string, url: string, children: number[] = []): object =>
    ({ id, callFrame: { functionName, url, lineNumber: 9, columnNumber: 0, scriptId: '0' }, children })
  const nodes = [
    frame(1, '(root)', '', [2, 3, 4, 5, 6, 7]),
    frame(2, 'wrapSafe', 'node:internal/modules/cjs/loader'),
    frame(3, '(idle)', ''),
    frame(4, 'sendQoS', 'file:///x/dist/vendor/aedes/lib/client.js'),
    frame(5, 'parse', '/x/node_modules/mqtt-packet/parser.js'),
    frame(6, 'writev', ''),
    frame(7, 'readUInt8', 'file:///x/dist/vendor/mqtt-packet/byte-list.js')
  ]
  // [node, µs]: start-up first, then the steady part
  const steps: Array<[number, number]> = [[2, 1_000_000], [3, 4_500_000], [4, 2_000_000], [5, 1_000_000], [7, 500_000], [6, 1_000_000]]
  const file = join(dir, 'p.cpuprofile')
  writeFileSync(file, JSON.stringify({ nodes, startTime: 0, endTime: 10_000_000, samples: steps.map((s) => s[0]), timeDeltas: steps.map((s) => s[1]) }))
  return file
}

t.test('profile-summary: self time by part and by function, after an optional skip', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-prof-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = profile(dir)
  const all = (await run(process.execPath, [SUMMARY, file])).stdout
  t.match(all, /^10\.0 s sampled, 45\.0 % idle/)
  t.match(all, /\| aedes \(patched\) \| {2}20\.0 % \| {2}36\.4 % \|/, 'aedes: 2 of 10 s, 2 of 5.5 busy')
  t.match(all, /\| Node internals \(JS\) \| {2}10\.0 % \|/)
  t.match(all, /\| native: writev \| {2}10\.0 % \|/)
  t.match(all, /\| sendQoS client\.js:10 \| {2}20\.0 % \|/, 'functions named with file and 1-based line')
  const skipped = (await run(process.execPath, [SUMMARY, file, '--skip', '1'])).stdout
  t.match(skipped, /^9\.0 s sampled after the first 1 s, 50\.0 % idle/)
  t.notMatch(skipped, /Node internals/, 'the start-up is left out')
  t.match(skipped, /\| mqtt-packet \| {2}11\.1 % \| {2}22\.2 % \|/)
  t.match(skipped, /\| mqtt-packet \(patched\) \| +5\.6 % \| +11\.1 % \|/, 'the vendored copy apart from ours')
})

t.test('profile-summary refuses bad input in one line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-prof-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const notProfile = join(dir, 'x.json')
  writeFileSync(notProfile, '{"__proto__": {"nodes": []}}')
  for (const [args, msg] of [
    [[join(dir, 'missing')], /missing: ENOENT/],
    [[notProfile], /not a V8 CPU profile/],
    [[notProfile, '--top', '0'], /--top 0: expected a positive integer/],
    [[notProfile, '--skip=-1'], /--skip -1: expected seconds/],
    [[notProfile, '--bogus'], /profile-summary: Unknown option '--bogus'/],
    [[], /^Usage:/]
  ] as Array<[string[], RegExp]>) {
    const r = await fails([SUMMARY, ...args])
    t.equal(r.code, 2, `${args.join(' ') || '(no file)'}: exit 2`)
    if (args.length > 0) t.match(r.stderr, msg)
    t.ok(r.stderr.trim().split('\n').length <= 1, 'one line')
  }
})

t.test('run.mjs refuses --only and --baseline it cannot honour, before starting anything', async (t) => {
  for (const [args, msg] of [
    [['--only', 'qos1,bogus'], /--only qos1,bogus: expected a list of idle,qos1,qos0,latency,connects/],
    [['--only', ''], /--only : expected a list/],
    [['--baseline', '/nonexistent-build'], /--baseline \/nonexistent-build: no dist\/cli\/main\.js there/],
    [['--brokers', 'base'], /"base" needs --baseline DIR/],
    [['--bogus'], /^compare: Unknown option '--bogus'.*\(--help lists the options\)$/m]
  ] as Array<[string[], RegExp]>) {
    const r = await fails([RUN, ...args])
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr, msg)
  }
})

const ONE = join(process.cwd(), 'bench', 'compare', 'one-in-flight.mjs')

t.test('one-in-flight.mjs refuses bad options in one line, before starting anything', async (t) => {
  for (const [args, msg] of [
    [['--rounds', '0'], /^one-in-flight: --rounds must be a whole number of at least 1, not "0"$/],
    [['--messages', '20'], /--messages must be a whole number of at least 21/],
    [['--warmup=-1'], /--warmup must be a whole number of at least 0, not "-1"/],
    [['--warmup', '-1'], /^one-in-flight: Option '--warmup' argument is ambiguous\.$/],
    [['--baseline', '/nonexistent-build'], /--baseline \/nonexistent-build: no built engine there/],
    [['--bogus'], /^one-in-flight: Unknown option '--bogus'/]
  ] as Array<[string[], RegExp]>) {
    const r = await fails([ONE, ...args])
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr.trim(), msg)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
  }
})

t.test('one-in-flight.mjs measures Mosquitto, this build\'s engine and a node:tls echo, and leaves nothing running', async (t) => {
  const { stdout } = await run(process.execPath, [ONE, '--rounds', '2', '--messages', '30', '--warmup', '0'], { timeout: 60_000 })
  const rows = stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
  const bySubject = new Map(rows.map((r) => [r.subject, r]))
  for (const [subject, unit] of [['mosquitto', 'QoS 1 message'], ['aedes, this build', 'QoS 1 message'], ['node:tls echo', 'echo']]) {
    const r = bySubject.get(subject)
    t.equal(r?.unit, unit, `${subject}: a row per ${unit}`)
    t.equal(r?.count, 2 * (30 - 20), `${subject}: the first 20 of each round left out`)
    const p50 = Number(r?.p50_us)
    const p99 = Number(r?.p99_us)
    t.ok(p50 > 0 && p99 >= p50, `${subject}: p50 ${p50} µs <= p99 ${p99} µs`)
    t.ok(Number(r?.cpu_us_per_unit) >= 0, `${subject}: CPU per unit`)
  }
  t.match(stdout, /\| subject \| per \| round trip p50 \/ p90 \/ p99 \(µs\) \| its CPU per unit \(µs\) \|/, 'and a table')
  // [e]: the pattern must not match this pgrep's own shell.
  const left = await run('sh', ['-c', 'pgrep -f "one-in-flight.mjs --serv[e]|bastion-one-in-fligh[t]-" || true'])
  t.equal(left.stdout.trim(), '', 'no server left running')
  t.same(readdirSync(tmpdir()).filter((f) => f.startsWith('bastion-one-in-flight-')), [], 'its temporary folder is removed')
})

const FLOOR = join(process.cwd(), 'bench', 'compare', 'floor.mjs')

t.test('floor.mjs relays what the generator sends: CONNACK, SUBACK, PUBACK, deliveries by filter at the lower QoS', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-floor-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  await run(process.execPath, [join(process.cwd(), 'dist', 'cli', 'main.js'), 'certs', 'init', '--out', join(dir, 'certs')])
  const floor = spawn(process.execPath, [FLOOR, '0', join(dir, 'certs', 'server.crt'), join(dir, 'certs', 'server.key')], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => { floor.kill() })
  // Port 0: the relay listens on a free port and says which.
  const port = await new Promise<number>((resolve, reject) => {
    floor.stdout.on('data', (d: Buffer) => { const m = d.toString().match(/^floor ready on (\d+)$/m); if (m !== null) resolve(Number(m[1])) })
    floor.once('exit', (code) => { reject(new Error(`floor exited ${String(code)}`)) })
  })
  t.ok(port > 0, `listening on 127.0.0.1:${port}`)
  const opts = { host: '127.0.0.1', port, protocol: 'mqtts' as const, ca: readFileSync(join(dir, 'certs', 'ca.crt')), servername: 'localhost', protocolVersion: 4 as const, reconnectPeriod: 0, username: 'any', password: 'any' }
  const sub = mqtt.connect({ ...opts, clientId: 'sub' })
  const pub = mqtt.connect({ ...opts, clientId: 'pub' })
  t.teardown(() => { sub.end(true); pub.end(true) })
  await Promise.all([once(sub, 'connect'), once(pub, 'connect')])
  const granted = await sub.subscribeAsync({ 'metrics/a/#': { qos: 1 }, 'metrics/b/#': { qos: 0 } })
  t.same(granted.map((g) => [g.topic, g.qos]), [['metrics/a/#', 1], ['metrics/b/#', 0]], 'SUBACK grants what was asked')
  const got: Array<[string, string, number]> = []
  sub.on('message', (topic, payload, packet) => { got.push([topic, payload.toString(), packet.qos]) })
  await pub.publishAsync('metrics/a/Temperatura', 'one', { qos: 1 }) // resolves on its PUBACK
  await pub.publishAsync('metrics/b/Humedad', 'two', { qos: 1 })
  await pub.publishAsync('metrics/c/Estado', 'nobody', { qos: 1 })
  await pub.publishAsync('metrics/a/Estado', 'three', { qos: 0 })
  for (let i = 0; i < 50 && got.length < 3; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.same(got, [['metrics/a/Temperatura', 'one', 1], ['metrics/b/Humedad', 'two', 0], ['metrics/a/Estado', 'three', 0]], 'each to its filter\'s subscriber, at the lower of the two QoS; nothing for a topic no one subscribed to')
})

const WRITER = join(process.cwd(), 'bench', 'compare', 'writer.mjs')

t.test('writer.mjs refuses bad options in one line, and measures this build\'s packet writer', async (t) => {
  for (const [args, msg] of [
    [['--reps', '0'], /^writer: --reps must be a whole number of at least 1, not "0"$/],
    [['--pairs', '8'], /^writer: --pairs must be a whole number of at least 16, not "8"$/],
    [['--baseline', '/nonexistent-build'], /^writer: --baseline \/nonexistent-build: no dist\/vendor\/mqtt-packet there/],
    [['--bogus'], /^writer: Unknown option '--bogus'/]
  ] as Array<[string[], RegExp]>) {
    const r = await fails([WRITER, ...args])
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr.trim(), msg)
  }
  const { stdout } = await run(process.execPath, [WRITER, '--reps', '1', '--pairs', '160'], { timeout: 60_000 })
  const row = JSON.parse(stdout.trim()) as { subject: string; us_per_pair: number[]; median_us_per_pair: number }
  t.equal(row.subject, 'this build')
  t.equal(row.us_per_pair.length, 1, 'one measurement')
  t.ok(row.median_us_per_pair > 0, `${row.median_us_per_pair} µs per PUBLISH + PUBACK written`)
  t.same(readdirSync(tmpdir()).filter((f) => f.startsWith('bastion-writer-')), [], 'its temporary certificates are removed')
})
