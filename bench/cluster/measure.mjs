// One repetition of one setup: start its processes, open the 8 pairs through the load generator
// of bench/compare (publishers on node A, subscribers on node B), run QoS 1 and QoS 0 at full
// speed and QoS 1 at a fixed rate, stop everything. Each measurement is one JSON line with the
// CPU of every server process (node A, node B, redis-server: /proc/<pid>/stat, all threads) and
// of the generator (this process, all threads) over the same window.
import { loadavg } from 'node:os'
import { performance } from 'node:perf_hooks'
import { Generator } from '../compare/generator.mjs'
import { loadLine, messageLoads } from '../compare/scenarios.mjs'
import { brokerCpuSeconds, brokerRunqWaitSeconds, genRunqWaitSeconds } from '../compare/processes.mjs'
import { PAIRS, pairCreds, startSetup, stopSetup } from './setups.mjs'

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const round = (x, d = 1) => Math.round(x * 10 ** d) / 10 ** d

/**
 * Starts counting; the returned function takes the delivered count and gives, per server
 * process, CPU % of one core, its main thread's run-queue wait % and CPU µs per delivered
 * message, their sums, and the generator's.
 */
function cpuMeter (procs) {
  const p0 = procs.map((p) => [brokerCpuSeconds(p.handle.pid), brokerRunqWaitSeconds(p.handle.pid)])
  const g0 = process.cpuUsage()
  const gw0 = genRunqWaitSeconds()
  const t0 = performance.now()
  return (delivered) => {
    const secs = (performance.now() - t0) / 1000
    const g = process.cpuUsage(g0)
    const genCpu = (g.user + g.system) / 1e6
    const each = {}
    let server = 0
    procs.forEach((p, i) => {
      const cpu = brokerCpuSeconds(p.handle.pid) - p0[i][0]
      server += cpu
      each[p.name] = {
        cpu_pct: round(cpu / secs * 100),
        runq_wait_pct: round((brokerRunqWaitSeconds(p.handle.pid) - p0[i][1]) / secs * 100),
        cpu_us_per_msg: delivered > 0 ? round(cpu / delivered * 1e6) : null
      }
    })
    return {
      seconds: round(secs, 2),
      procs: each,
      server_cpu_pct: round(server / secs * 100),
      server_cpu_us_per_msg: delivered > 0 ? round(server / delivered * 1e6) : null,
      gen_cpu_pct: round(genCpu / secs * 100),
      gen_runq_wait_pct: round((genRunqWaitSeconds() - gw0) / secs * 100),
      gen_cpu_us_per_msg: delivered > 0 ? round(genCpu / delivered * 1e6) : null,
      loadavg_1m: round(loadavg()[0], 2)
    }
  }
}

export async function runRepetition ({ setup, rep, opts, files, pin, emit }) {
  const base = { bench: 'cluster', setup: setup.key, label: setup.label, rep, gen_workers: opts.workers, gen_cores: pin.genCores, layout: pin.layout }
  const out = (line) => emit({ ...base, ...line })
  const running = await startSetup(setup, files, rep, pin)
  const gen = new Generator({ workers: opts.workers, host: '127.0.0.1', port: running.ports.a, servername: 'localhost', ca: files.ca })
  try {
    const opened = await gen.spread('openPairs', pairCreds(setup, rep, files, running.ports), 'list')
    if (opened.ok !== PAIRS) throw new Error(`only ${opened.ok}/${PAIRS} publisher/subscriber pairs connected: ${JSON.stringify(opened.failed)}`)
    out({ scenario: 'pairs', tls: opened.tls, pids: Object.fromEntries(running.procs.map((p) => [p.name, p.handle.pid])) })
    await sleep(200) // the subscriptions reach Redis (mqemitter-redis SUBSCRIBE) before the first publish
    for (const l of messageLoads(opts.latencyRate)) {
      await gen.all('startLoad', { qos: l.qos, window: opts.window, rate: l.rate })
      await sleep(opts.warmupMs)
      const first = await gen.all('mark')
      const meter = cpuMeter(running.procs)
      await sleep(opts.durationMs)
      const last = await gen.all('mark')
      const delivered = last.delivered - first.delivered
      const measured = meter(delivered)
      const stop = await gen.all('stopLoad')
      out(loadLine(l, { first, last, stop, measured, opts }))
    }
    await gen.all('closePairs')
  } finally {
    await gen.close()
    out({ scenario: 'process_log', processes: await stopSetup(running) })
  }
}
