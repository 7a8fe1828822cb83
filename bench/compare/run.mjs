// Mosquitto vs mqtt-bastion, side by side on loopback, TLS 1.3: QoS 1 and QoS 0 throughput,
// QoS 1 latency at a fixed rate, connects/s and idle memory per connection. See README.md here.
//
//   npm run build && node bench/compare/run.mjs [--reps 2] [--duration 5] [--idle 2000] ...
//
// JSON lines on stdout (one per measurement), progress on stderr, then the Markdown tables.
// Each broker runs as its own process pinned to the first CPU this process may use (taskset -c);
// this process re-executes itself pinned to the others, so the load generator never shares the
// broker's core. Repetitions are interleaved (A B C, then C B A, ...), so a drift in the
// machine's load hits every broker alike.
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { brokerKinds, haproxyPath, setupFiles } from './brokers.mjs'
import { killAll } from './processes.mjs'
import { markdown } from './report.mjs'
import { runRepetition } from './scenarios.mjs'

const HELP = `Usage: node bench/compare/run.mjs [options]   (build first: npm run build)
  --reps N            interleaved repetitions per broker (2)             env BENCH_COMPARE_REPS
  --duration S        seconds measured per throughput/latency run (5)    env BENCH_COMPARE_DURATION
  --warmup S          seconds of load before each measurement (1)        env BENCH_COMPARE_WARMUP
  --idle N            idle connections for the memory scenario (2000)    env BENCH_COMPARE_IDLE
  --connects N        connect cycles per connects/s run (500)            env BENCH_COMPARE_CONNECTS
  --cold N            cost-12 first logins for "full" (8)                env BENCH_COMPARE_COLD
  --workers N         load-generator threads (2)                         env BENCH_COMPARE_WORKERS
  --window N          messages in flight per publisher (16)
  --latency-rate R    total offered msg/s in the latency run (1000)
  --brokers LIST      of mosquitto,floor,passwd,full,allow,haproxy,base (mosquitto,passwd,full)  env BENCH_COMPARE_BROKERS
  --allow-all         add "allow" (ours with a match-everything ACL file)
  --haproxy           add "haproxy" (ours behind HAProxy: it terminates TLS, PROXY v2 to our
                      tcp listener; both on the broker's core, measured together)
  --only LIST         run only these of idle,qos1,qos0,latency,connects (all)
  --baseline DIR      add "base": the full setup run by another build, DIR being a checkout with
                      dist/ built and node_modules installed (e.g. a git worktree of main)
  --no-pin            do not use taskset
  --out FILE          also write the JSON lines and the tables to FILE`

let parsed
try {
  parsed = parseArgs({
    options: {
      reps: { type: 'string' }, duration: { type: 'string' }, warmup: { type: 'string' }, idle: { type: 'string' },
      connects: { type: 'string' }, cold: { type: 'string' }, workers: { type: 'string' }, window: { type: 'string' },
      'latency-rate': { type: 'string' }, brokers: { type: 'string' }, baseline: { type: 'string' }, only: { type: 'string' }, 'allow-all': { type: 'boolean' }, haproxy: { type: 'boolean' },
      'no-pin': { type: 'boolean' }, out: { type: 'string' }, compare: { type: 'boolean' }, help: { type: 'boolean' }
    }
  })
} catch (err) {
  console.error(`compare: ${err.message} (--help lists the options)`)
  process.exit(2)
}
const { values: flags } = parsed
if (flags.help) { console.log(HELP); process.exit(0) }
const env = process.env
const num = (flag, name, dflt) => Number(flags[flag] ?? env[`BENCH_COMPARE_${name}`] ?? dflt)
const opts = {
  reps: num('reps', 'REPS', 2),
  durationMs: num('duration', 'DURATION', 5) * 1000,
  warmupMs: num('warmup', 'WARMUP', 1) * 1000,
  idle: num('idle', 'IDLE', 2000),
  connects: num('connects', 'CONNECTS', 500),
  cold: num('cold', 'COLD', 8),
  workers: num('workers', 'WORKERS', 2),
  window: num('window', 'WINDOW', 16),
  latencyRate: num('latency-rate', 'LATENCY_RATE', 1000),
  only: new Set((flags.only ?? 'idle,qos1,qos0,latency,connects').split(',')),
  connectConcurrency: 8, // per worker
  settleMs: 2000
}
const SCENARIOS = ['idle', 'qos1', 'qos0', 'latency', 'connects']
const badOnly = [...opts.only].filter((k) => !SCENARIOS.includes(k))
if (badOnly.length > 0 || opts.only.size === 0) { console.error(`compare: --only ${flags.only}: expected a list of ${SCENARIOS.join(',')}`); process.exit(2) }
let brokerKeys = (flags.brokers ?? env.BENCH_COMPARE_BROKERS ?? 'mosquitto,passwd,full').split(',')
if (flags['allow-all'] && !brokerKeys.includes('allow')) brokerKeys.push('allow')
if (flags.haproxy && !brokerKeys.includes('haproxy')) brokerKeys.push('haproxy')
const baseline = flags.baseline === undefined ? undefined : resolve(flags.baseline)
if (baseline !== undefined) {
  if (!existsSync(join(baseline, 'dist', 'cli', 'main.js'))) { console.error(`compare: --baseline ${flags.baseline}: no dist/cli/main.js there (build that checkout first)`); process.exit(2) }
  if (!brokerKeys.includes('base')) brokerKeys.push('base')
} else if (brokerKeys.includes('base')) { console.error('compare: "base" needs --baseline DIR'); process.exit(2) }
if (brokerKeys.includes('haproxy') && haproxyPath() === undefined) {
  if (env.BENCH_COMPARE_PIN === undefined) console.error('compare: skipping "haproxy" (ours behind HAProxy): haproxy is not installed (Debian: apt-get install haproxy)')
  brokerKeys = brokerKeys.filter((k) => k !== 'haproxy')
  if (brokerKeys.length === 0) process.exit(2)
}

// ---- pinning: the broker gets the first allowed CPU, this process (the generator) the rest ----

function allowedCpus () {
  const list = readFileSync('/proc/self/status', 'utf8').match(/^Cpus_allowed_list:\s*(\S+)/m)[1]
  return list.split(',').flatMap((part) => {
    const [a, b = a] = part.split('-').map(Number)
    return Array.from({ length: b - a + 1 }, (_, i) => a + i)
  })
}
const hasTaskset = !flags['no-pin'] && (() => { try { execFileSync('taskset', ['-V'], { stdio: 'ignore' }); return true } catch { return false } })()

if (env.BENCH_COMPARE_PIN === undefined) {
  const cpus = allowedCpus()
  if (hasTaskset && cpus.length > 1) {
    const pin = { broker: cpus[0], genCores: cpus.length - 1 }
    const child = spawn('taskset', ['-c', cpus.slice(1).join(','), process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)],
      { stdio: 'inherit', env: { ...env, BENCH_COMPARE_PIN: JSON.stringify(pin) } })
    // Ctrl-C reaches both processes; a signal sent to this one alone is passed on.
    for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig))
    child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)))
  } else {
    process.env.BENCH_COMPARE_PIN = JSON.stringify({ broker: undefined, genCores: cpus.length })
    console.error(`compare: ${hasTaskset ? 'one CPU only' : 'no taskset'}: brokers and generator are NOT pinned; broker CPU % is then not "of its own core"`)
    await main(JSON.parse(process.env.BENCH_COMPARE_PIN))
  }
} else {
  await main(JSON.parse(env.BENCH_COMPARE_PIN))
}

async function main (pin) {
  const root = fileURLToPath(new URL('../..', import.meta.url))
  if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) { console.error('compare: dist/ is missing: npm run build'); process.exit(2) }
  const dir = mkdtempSync(join(tmpdir(), 'bastion-compare-'))
  let cleaned = false
  const cleanup = () => {
    if (cleaned) return
    cleaned = true
    killAll()
    rmSync(dir, { recursive: true, force: true })
  }
  process.on('exit', cleanup)
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { console.error(`compare: ${sig}, cleaning up`); cleanup(); process.exit(130) })

  const t0 = Date.now()
  const lines = []
  const emit = (line) => { lines.push(line); console.log(JSON.stringify(line)) }
  const progress = (msg) => console.error(`[compare ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}`)
  progress(`broker on CPU ${pin.broker ?? '(unpinned)'}, generator on ${pin.genCores} CPU(s) with ${opts.workers} worker threads; ${opts.reps} reps of ${brokerKeys.join(', ')}`)
  try {
    progress('setup: certificates, mosquitto_passwd, user import')
    const files = setupFiles(dir, { ...opts, baseline })
    const all = brokerKinds(files, { baseline })
    const unknown = brokerKeys.filter((k) => !(k in all))
    if (unknown.length > 0) throw new Error(`unknown broker(s) ${unknown.join(', ')}`)
    const kinds = brokerKeys.map((k) => all[k])
    emit({ bench: 'compare', scenario: 'setup', pin, opts: { ...opts, only: [...opts.only] }, node: process.version, setup_s: (Date.now() - t0) / 1000 })
    for (let rep = 1; rep <= opts.reps; rep++) {
      const order = rep % 2 === 1 ? kinds : [...kinds].reverse()
      for (const kind of order) {
        progress(`rep ${rep}: ${kind.label}`)
        try {
          await runRepetition({ kind, rep, opts, files, pin, emit })
        } catch (err) {
          emit({ bench: 'compare', broker: kind.key, rep, scenario: 'error', error: err.stack ?? String(err) })
        }
      }
    }
    const tables = markdown(lines, kinds)
    console.log('\n' + tables)
    progress('done')
    if (flags.out) writeFileSync(flags.out, lines.map((l) => JSON.stringify(l)).join('\n') + '\n\n' + tables + '\n')
  } finally {
    cleanup()
  }
}
