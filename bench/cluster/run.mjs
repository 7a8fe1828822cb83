// Cluster mode on Redis: 1 node vs 2 nodes, on loopback, TLS 1.3. 8 publisher -> subscriber
// pairs: QoS 1 and QoS 0 throughput, QoS 1 latency at a fixed rate; with 2 nodes every
// publisher is on node A and every subscriber on node B, so every message crosses nodes.
// Beside each result: the CPU of node A, node B, redis-server and the load generator. See README.md here.
//
//   npm run build && node bench/cluster/run.mjs [--reps 2] [--duration 5] ...
//
// JSON lines on stdout (one per measurement), progress on stderr, then the Markdown tables.
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { killAll } from '../compare/processes.mjs'
import { runRepetition } from './measure.mjs'
import { markdown } from './report.mjs'
import { CLI, SETUPS, redisPath, setupFiles } from './setups.mjs'

const HELP = `Usage: node bench/cluster/run.mjs [options]   (build first: npm run build; or npm run bench:cluster)
  --reps N            interleaved repetitions per setup (2)               env BENCH_CLUSTER_REPS
  --duration S        seconds measured per run (5)                        env BENCH_CLUSTER_DURATION
  --warmup S          seconds of load before each measurement (1)         env BENCH_CLUSTER_WARMUP
  --workers N         load-generator threads (2)                          env BENCH_CLUSTER_WORKERS
  --window N          messages in flight per publisher (16)
  --latency-rate R    total offered msg/s in the latency run (1000)
  --setups LIST       of single,one,two (single,one,two)                 env BENCH_CLUSTER_SETUPS
                        single: 1 node without cluster (baseline); one: 1 node on Redis (every
                        message through Redis pub/sub); two: 2 nodes on Redis, pub on A, sub on B
  --layout L          auto | shared | spread | none (auto)
                        shared: nodes and redis-server pinned to the first CPU, generator the rest
                        spread: node A, node B, redis-server one CPU each, generator the rest (4+ CPUs)
                        none:   nothing pinned
                        auto:   spread with 4+ CPUs, shared with 2-3, none with 1 or no taskset
  --out FILE          also write the JSON lines and the tables to FILE`

const { values: flags } = parseArgs({
  options: {
    reps: { type: 'string' }, duration: { type: 'string' }, warmup: { type: 'string' }, workers: { type: 'string' },
    window: { type: 'string' }, 'latency-rate': { type: 'string' }, setups: { type: 'string' }, layout: { type: 'string' },
    out: { type: 'string' }, help: { type: 'boolean' }
  }
})
if (flags.help) { console.log(HELP); process.exit(0) }
const env = process.env
const num = (flag, name, dflt) => {
  const v = Number(flags[flag] ?? env[`BENCH_CLUSTER_${name}`] ?? dflt)
  if (!(v > 0)) { console.error(`cluster: --${flag} must be a positive number`); process.exit(2) }
  return v
}
const opts = {
  reps: Math.floor(num('reps', 'REPS', 2)),
  durationMs: num('duration', 'DURATION', 5) * 1000,
  warmupMs: num('warmup', 'WARMUP', 1) * 1000,
  workers: Math.floor(num('workers', 'WORKERS', 2)),
  window: Math.floor(num('window', 'WINDOW', 16)),
  latencyRate: num('latency-rate', 'LATENCY_RATE', 1000)
}
const setupKeys = (flags.setups ?? env.BENCH_CLUSTER_SETUPS ?? 'single,one,two').split(',').filter((k) => k !== '')
const unknown = setupKeys.filter((k) => !(k in SETUPS))
if (unknown.length > 0 || setupKeys.length === 0) { console.error(`cluster: unknown setup(s) ${unknown.join(', ')}: use single, one, two`); process.exit(2) }
if (setupKeys.some((k) => SETUPS[k].redis) && redisPath() === undefined) { console.error('cluster: redis-server not found (Debian: apt-get install redis-server)'); process.exit(2) }

// ---- pinning: the servers get their CPU(s), this process (the generator) the rest ------------

function allowedCpus () {
  const list = readFileSync('/proc/self/status', 'utf8').match(/^Cpus_allowed_list:\s*(\S+)/m)[1]
  return list.split(',').flatMap((part) => {
    const [a, b = a] = part.split('-').map(Number)
    return Array.from({ length: b - a + 1 }, (_, i) => a + i)
  })
}

function chooseLayout () {
  const cpus = allowedCpus()
  const hasTaskset = (() => { try { execFileSync('taskset', ['-V'], { stdio: 'ignore' }); return true } catch { return false } })()
  let layout = flags.layout ?? 'auto'
  if (!['auto', 'shared', 'spread', 'none'].includes(layout)) { console.error(`cluster: --layout ${layout}: use auto, shared, spread or none`); process.exit(2) }
  if (layout === 'auto') layout = !hasTaskset || cpus.length < 2 ? 'none' : cpus.length >= 4 ? 'spread' : 'shared'
  if (layout !== 'none' && !hasTaskset) { console.error('cluster: taskset not found (util-linux): use --layout none'); process.exit(2) }
  if (layout === 'shared' && cpus.length < 2) { console.error('cluster: --layout shared needs 2 CPUs'); process.exit(2) }
  if (layout === 'spread' && cpus.length < 4) { console.error(`cluster: --layout spread needs 4 CPUs (${cpus.length} here)`); process.exit(2) }
  if (layout === 'none') return { layout, genCores: cpus.length, genCpus: undefined, cpus: cpus.length }
  if (layout === 'shared') return { layout, nodeA: cpus[0], nodeB: cpus[0], redis: cpus[0], genCpus: cpus.slice(1), genCores: cpus.length - 1, cpus: cpus.length }
  return { layout, nodeA: cpus[0], nodeB: cpus[1], redis: cpus[2], genCpus: cpus.slice(3), genCores: cpus.length - 3, cpus: cpus.length }
}

const LAYOUT_NOTE = {
  none: 'nothing pinned: every process competes for every CPU; CPU % is not "of its own core"',
  shared: 'node A, node B and redis-server share the first CPU, the generator has the rest: every setup gets the same one core for the server side, so the 2-node column shows what clustering costs, not how it scales (there are not enough CPUs to give each process its own)',
  spread: 'node A, node B and redis-server on a CPU each, the generator on the rest: each node adds a core'
}

if (env.BENCH_CLUSTER_PIN === undefined) {
  const pin = chooseLayout()
  if (pin.genCpus !== undefined) {
    const child = spawn('taskset', ['-c', pin.genCpus.join(','), process.execPath, ...process.execArgv, fileURLToPath(import.meta.url), ...process.argv.slice(2)],
      { stdio: 'inherit', env: { ...env, BENCH_CLUSTER_PIN: JSON.stringify(pin) } })
    // Ctrl-C reaches both processes; a signal sent to this one alone is passed on.
    for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => child.kill(sig))
    child.on('exit', (code, signal) => process.exit(code ?? (signal ? 128 : 1)))
  } else {
    await main(pin)
  }
} else {
  await main(JSON.parse(env.BENCH_CLUSTER_PIN))
}

async function main (pin) {
  if (!existsSync(CLI)) { console.error('cluster: dist/ is missing: npm run build'); process.exit(2) }
  const dir = mkdtempSync(join(tmpdir(), 'bastion-cluster-bench-'))
  let cleaned = false
  const cleanup = () => {
    if (cleaned) return
    cleaned = true
    killAll() // SIGKILL, by pid, to whatever this run started and is still running
    rmSync(dir, { recursive: true, force: true })
  }
  process.on('exit', cleanup)
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { console.error(`cluster: ${sig}, cleaning up`); cleanup(); process.exit(130) })

  const t0 = Date.now()
  const lines = []
  const emit = (line) => { lines.push(line); console.log(JSON.stringify(line)) }
  const progress = (msg) => console.error(`[cluster ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${msg}`)
  progress(`layout ${pin.layout} (${pin.cpus} CPUs): ${LAYOUT_NOTE[pin.layout]}`)
  progress(`${opts.reps} reps of ${setupKeys.join(', ')}; ${opts.durationMs / 1000} s measured per run, generator: ${opts.workers} threads on ${pin.genCores} CPU(s)`)
  try {
    const setups = setupKeys.map((k) => SETUPS[k])
    const files = setupFiles(dir, { reps: opts.reps, setups: setupKeys })
    let redisVersion = '?'
    try { redisVersion = execFileSync(redisPath(), ['--version']).toString().match(/v=(\S+)/)?.[1] ?? '?' } catch {}
    emit({ bench: 'cluster', scenario: 'setup', pin, layout_note: LAYOUT_NOTE[pin.layout], opts, node: process.version, redis: redisVersion, setup_s: (Date.now() - t0) / 1000 })
    for (let rep = 1; rep <= opts.reps; rep++) {
      for (const setup of rep % 2 === 1 ? setups : [...setups].reverse()) { // A B C, then C B A
        progress(`rep ${rep}: ${setup.label}`)
        try {
          await runRepetition({ setup, rep, opts, files, pin, emit })
        } catch (err) {
          emit({ bench: 'cluster', setup: setup.key, rep, scenario: 'error', error: err.stack ?? String(err) })
        }
      }
    }
    const tables = `Layout: ${pin.layout}, ${pin.cpus} CPUs: ${LAYOUT_NOTE[pin.layout]}.\n\n` + markdown(lines, setups, opts.latencyRate)
    console.log('\n' + tables)
    progress('done')
    if (flags.out) writeFileSync(flags.out, lines.map((l) => JSON.stringify(l)).join('\n') + '\n\n' + tables + '\n')
  } finally {
    cleanup()
  }
}
