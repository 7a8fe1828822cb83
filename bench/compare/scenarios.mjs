// One repetition against one broker: start it pinned, run every scenario, stop it. Each
// measurement becomes one JSON line (emit) carrying the broker's CPU (share of its one core,
// /proc/<pid>/stat) and the generator's (this process, all threads, share of ONE core; it has
// `gen_cores` of them) over the same window: a broker near 100 % with a generator below its
// cores means the broker set the pace. For ours behind HAProxy, "the broker" is both processes
// (they share the one core): CPU, RSS and run-queue wait are their sums, and each line carries
// the split in `procs`.
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { loadavg } from 'node:os'
import { PAIRS } from './brokers.mjs'
import { brokerCpuSeconds, brokerRssKiB, brokerRunqWaitSeconds, cpuSeconds, genRunqWaitSeconds, rssKiB, runqWaitSeconds, startBroker, stopBroker, summariseLog, syscalls } from './processes.mjs'
import { Generator } from './generator.mjs'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d

/**
 * Starts counting broker and generator CPU; the returned function reads the deltas. The broker's
 * figures are summed over the handle's processes (ours and HAProxy for the pair), whose split
 * is then in `procs`.
 */
function cpuMeter (handle) {
  const b0 = cpuSeconds(handle)
  const w0 = runqWaitSeconds(handle)
  const each0 = handle.pids.map((pid) => [brokerCpuSeconds(pid), brokerRunqWaitSeconds(pid)])
  const gw0 = genRunqWaitSeconds()
  const s0 = syscalls(handle)
  const g0 = process.cpuUsage()
  const t0 = performance.now()
  return () => {
    const secs = (performance.now() - t0) / 1000
    const g = process.cpuUsage(g0)
    const brokerCpu = cpuSeconds(handle) - b0
    const s1 = syscalls(handle)
    const genCpu = (g.user + g.system) / 1e6
    const procs = handle.procs.length < 2 ? {} : {
      procs: Object.fromEntries(handle.procs.map((p, i) => [p.name, {
        cpu_pct: round((brokerCpuSeconds(p.pid) - each0[i][0]) / secs * 100),
        runq_wait_pct: round((brokerRunqWaitSeconds(p.pid) - each0[i][1]) / secs * 100)
      }]))
    }
    return {
      seconds: round(secs, 2),
      broker_cpu_pct: round(brokerCpu / secs * 100),
      gen_cpu_pct: round(genCpu / secs * 100),
      broker_cpu_s: round(brokerCpu, 3),
      broker_syscalls_read: s1.reads - s0.reads,
      broker_syscalls_write: s1.writes - s0.writes,
      gen_cpu_s: round(genCpu, 3),
      // Share of the window the broker's main thread was runnable but not running: other
      // processes on its core. Near 0 on a quiet machine. For the pair, the sum of both main
      // threads' waits, which includes each waiting while the other runs.
      broker_runq_wait_pct: round((runqWaitSeconds(handle) - w0) / secs * 100),
      gen_runq_wait_pct: round((genRunqWaitSeconds() - gw0) / secs * 100),
      loadavg_1m: round(loadavg()[0], 2),
      ...procs
    }
  }
}

/** The three message loads of a pairs run: QoS 1 and QoS 0 at full speed, QoS 1 at a fixed total rate. */
export function messageLoads (latencyRate) {
  return [
    { key: 'qos1', scenario: 'qos1_throughput', qos: 1, rate: 0 },
    { key: 'qos0', scenario: 'qos0_throughput', qos: 0, rate: 0 },
    { key: 'latency', scenario: 'qos1_latency', qos: 1, rate: latencyRate / PAIRS }
  ]
}

/**
 * The JSON line of one load: the generator's marks before and after the window, what stopLoad
 * reported, and what was measured over the window (CPU and the like, merged in as is).
 */
export function loadLine (l, { first, last, stop, measured, opts }) {
  const delivered = last.delivered - first.delivered
  const common = {
    qos: l.qos, window: opts.window, delivered, published: last.sent - first.sent,
    undelivered_at_stop: stop.undelivered, unacked_at_stop: stop.unacked, window_stalls: stop.stalls, ...measured
  }
  if (l.rate === 0) return { scenario: l.scenario, value: round(delivered / measured.seconds, 0), unit: 'msg/s', ...common }
  const lat = last.latencies ?? []
  return {
    scenario: l.scenario, unit: 'ms', offered_rate: opts.latencyRate, achieved_rate: round(delivered / measured.seconds, 0),
    p50_ms: pct(lat, 50), p90_ms: pct(lat, 90), p99_ms: pct(lat, 99), max_ms: pct(lat, 100), samples: lat.length, ...common
  }
}

function pct (xs, p) {
  if (xs.length === 0) return null
  const s = Float64Array.from(xs).sort()
  return round(s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))], 2)
}

/**
 * CPU per unit of work (delivered message, connect), which contention on the machine disturbs
 * far less than the rates; and the generator's headroom: how many times the broker's rate on a
 * whole core of its own the generator could drive on all of its cores. Below 1, the generator
 * would be the bottleneck on a quiet machine.
 */
function perUnit (m, units, genCores) {
  if (!(units > 0)) return {}
  const b = m.broker_cpu_s / units * 1e6
  const g = m.gen_cpu_s / units * 1e6
  return {
    broker_cpu_us_per_unit: round(b),
    gen_cpu_us_per_unit: round(g),
    gen_headroom: g > 0 ? round(genCores * b / g, 2) : null,
    broker_reads_per_unit: round(m.broker_syscalls_read / units, 3),
    broker_writes_per_unit: round(m.broker_syscalls_write / units, 3)
  }
}

export async function runRepetition ({ kind, rep, opts, files, pin, emit }) {
  const handle = await startBroker(kind, { cpu: pin.broker, logFile: join(files.dir, `${kind.key}-r${rep}.log`) })
  const gen = new Generator({ workers: opts.workers, host: '127.0.0.1', port: handle.port, servername: 'localhost', ca: files.ca })
  opts = { ...opts, genCores: pin.genCores }
  const base = { bench: 'compare', broker: kind.key, label: kind.label, rep, gen_workers: opts.workers, gen_cores: pin.genCores }
  const out = (line) => emit({ ...base, ...line })
  try {
    // Memory first, on the fresh process, so the baseline is not what earlier scenarios left.
    if (opts.only.has('idle')) await idleMemory({ kind, rep, opts, gen, handle, out })
    if (['qos1', 'qos0', 'latency'].some((k) => opts.only.has(k))) await throughput({ kind, rep, opts, gen, handle, out })
    if (opts.only.has('connects')) await connectRate({ kind, rep, opts, gen, handle, out })
  } finally {
    await gen.close()
    const exit = await stopBroker(handle)
    out({ scenario: 'broker_log', exit, notable: summariseLog(handle) })
  }
}

/**
 * N idle TLS connections, logged in, opened in two halves: (RSS after - RSS before) / N, and the
 * marginal cost, (RSS after - RSS between the halves) / second half. The first number carries
 * what the process grows once whatever N is (V8's young generation and code, caches filled by
 * the first logins); the second is what one more connection costs, i.e. what sizes a fleet.
 */
async function idleMemory ({ kind, rep, opts, gen, handle, out }) {
  await sleep(1000)
  const before = rssKiB(handle)
  const beforeEach = handle.procs.map((p) => brokerRssKiB(p.pid))
  const creds = kind.creds.idle(rep, opts.idle)
  const half = Math.floor(creds.length / 2)
  const meter = cpuMeter(handle)
  const first = await gen.spread('openIdle', creds.slice(0, half), 'creds', { concurrency: 16 })
  await sleep(opts.settleMs)
  const mid = rssKiB(handle)
  const second = await gen.spread('openIdle', creds.slice(half), 'creds', { concurrency: 16 })
  const m = meter()
  await sleep(opts.settleMs) // let the broker finish what the logins left behind (GC, log writes)
  const after = rssKiB(handle)
  const ok = first.ok + second.ok
  const failed = { ...first.failed }
  for (const [why, n] of Object.entries(second.failed ?? {})) failed[why] = (failed[why] ?? 0) + n
  const ms = [...(first.ms ?? []), ...(second.ms ?? [])]
  out({
    scenario: 'idle_memory', value: ok > 0 ? round((after - before) / ok, 2) : null, unit: 'KiB/connection',
    connections: ok, failed, rss_before_kib: before, rss_mid_kib: mid, rss_after_kib: after,
    open_rate: round(ok / (m.seconds - opts.settleMs / 1000)), login_p50_ms: pct(ms, 50), ...m, ...perUnit(m, ok, opts.genCores),
    // the pair's RSS split (before -> after, KiB)
    ...(handle.procs.length < 2 ? {} : { rss_procs_kib: Object.fromEntries(handle.procs.map((p, i) => [p.name, [beforeEach[i], brokerRssKiB(p.pid)]])) })
  })
  out({
    scenario: 'idle_memory_marginal', value: second.ok > 0 ? round((after - mid) / second.ok, 2) : null, unit: 'KiB/connection',
    connections: second.ok, rss_mid_kib: mid, rss_after_kib: after
  })
  await gen.all('closeIdle')
}

/** 8 publishers -> 8 subscribers: QoS 1 and QoS 0 at full speed, then QoS 1 latency at a fixed rate. */
async function throughput ({ kind, rep, opts, gen, handle, out }) {
  const opened = await gen.spread('openPairs', kind.creds.pairs(rep), 'list')
  if (opened.ok !== PAIRS) {
    out({ scenario: 'pairs', error: `only ${opened.ok}/${PAIRS} publisher/subscriber pairs connected`, failed: opened.failed })
    await gen.all('closePairs')
    return
  }
  out({ scenario: 'pairs', tls: opened.tls })
  for (const l of messageLoads(opts.latencyRate).filter((l) => opts.only.has(l.key))) {
    await gen.all('startLoad', { qos: l.qos, window: opts.window, rate: l.rate })
    await sleep(opts.warmupMs)
    const first = await gen.all('mark')
    const meter = cpuMeter(handle)
    await sleep(opts.durationMs)
    const last = await gen.all('mark')
    const m = meter()
    const stop = await gen.all('stopLoad')
    const delivered = last.delivered - first.delivered
    out(loadLine(l, { first, last, stop, measured: { ...m, ...perUnit(m, delivered, opts.genCores) }, opts }))
  }
  await gen.all('closePairs')
}

/**
 * Connect cycles (full TLS handshake, CONNECT, CONNACK, DISCONNECT, close). Our full setup
 * allows one login per user per TOTP step, so: a warm-up where N users log in once with this
 * step's code (bcrypt, which fills auth.credentialCache), then the measured run where the same
 * users log in with the next step's code and the same client ids (window 1 accepts the code
 * now; the cache skips bcrypt; each id's binding is only read). And a small cold run with
 * cost-12 hashes, which is bcrypt-bound by design.
 */
async function connectRate ({ kind, rep, opts, gen, handle, out }) {
  const run = async (scenario, creds, concurrency, extra = {}) => {
    const meter = cpuMeter(handle)
    const r = await gen.spread('connects', creds, 'creds', { concurrency })
    const m = meter()
    out({
      scenario, value: round(r.ok / m.seconds), unit: 'connects/s', ok: r.ok, failed: r.failed,
      connect_p50_ms: pct(r.ms, 50), connect_p99_ms: pct(r.ms, 99), concurrency: concurrency * opts.workers, ...extra, ...m, ...perUnit(m, r.ok, opts.genCores)
    })
  }
  if (kind.codeLogins !== true) {
    await run('connects', kind.creds.connects(rep, opts.connects), opts.connectConcurrency)
    return
  }
  const step = kind.creds.step()
  // The measured logins are each device's next one, as a fleet on a schedule logs in: the same
  // client id (bound to its user at the first login, now only read) and the cache warm.
  await run('connects_warmup', kind.creds.connects(rep, opts.connects, 'c', step), opts.connectConcurrency, { note: 'first login of each user and client id: bcrypt cost 4, the id bound' })
  await run('connects', kind.creds.connects(rep, opts.connects, 'c', step + 1), opts.connectConcurrency, { note: 'each device\'s next login: credential cache hit, its client id already bound' })
  // All at once: the login queue takes 2 per bcrypt worker and queues the rest.
  await run('connects_cold_bcrypt12', kind.creds.cold(rep, opts.cold), Math.ceil(opts.cold / opts.workers), { note: 'first login, bcrypt cost 12' })
}
