// The JSON lines of a run as Markdown: results (mean of the repetitions, ratio to "1 node on
// Redis"), the CPU of every process during each measurement, and server CPU per message.

const ROWS = [
  { scenario: 'qos1_throughput', title: 'QoS 1 delivered msg/s (higher is better)', short: 'QoS 1 at full speed', get: (l) => [l.value] },
  { scenario: 'qos0_throughput', title: 'QoS 0 delivered msg/s (higher is better)', short: 'QoS 0 at full speed', get: (l) => [l.value] },
  { scenario: 'qos1_latency', title: 'QoS 1 latency p50 / p99 at R msg/s, ms (lower is better)', short: 'QoS 1 at R msg/s', get: (l) => [l.p50_ms, l.p99_ms] }
]
const NAMES = { node_a: 'A', node_b: 'B', redis: 'Redis' }
const REF = 'one'

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length
const fmt = (x) => x === null || x === undefined || Number.isNaN(x) ? '–' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x >= 10 ? x.toFixed(1) : x.toFixed(2)

/** Per component: mean and ± half the range as a share of the mean. */
function summarise (rows) {
  return rows[0].map((_, i) => {
    const xs = rows.map((r) => r[i]).filter((x) => typeof x === 'number' && Number.isFinite(x))
    if (xs.length === 0) return null
    const m = mean(xs)
    return { mean: m, spread: xs.length > 1 && m !== 0 ? (Math.max(...xs) - Math.min(...xs)) / 2 / m : 0 }
  })
}

export function markdown (lines, setups, rate) {
  const of = (setup, row) => lines.filter((l) => l.setup === setup.key && l.scenario === row.scenario && !l.error)
  const head = `| metric | ${setups.map((s) => s.label).join(' | ')} |\n|---|${setups.map(() => '---|').join('')}`
  const ref = setups.find((s) => s.key === REF)
  const results = []
  const cpu = []
  const cost = []
  for (const row of ROWS) {
    const title = row.title.replace('R msg/s', `${rate} msg/s`)
    const short = row.short.replace('R msg/s', `${rate} msg/s`)
    const refSum = ref === undefined || of(ref, row).length === 0 ? null : summarise(of(ref, row).map(row.get))
    const cells = []
    const cpuCells = []
    const costCells = []
    for (const s of setups) {
      const ls = of(s, row)
      if (ls.length === 0) { cells.push('–'); cpuCells.push('–'); costCells.push('–'); continue }
      const sum = summarise(ls.map(row.get))
      let cell = sum.map((p) => p === null ? '–' : fmt(p.mean)).join(' / ')
      const spread = Math.max(...sum.map((p) => p?.spread ?? 0))
      if (spread >= 0.05) cell += ` (±${Math.round(spread * 100)} %)`
      if (refSum !== null && s !== ref && refSum.every((p, i) => p !== null && p.mean > 0 && sum[i] !== null)) {
        cell += ` · ${sum.map((p, i) => (p.mean / refSum[i].mean).toFixed(2)).join(' / ')}×`
      }
      cells.push(cell)
      const avg = (f) => { const xs = ls.map(f).filter((x) => typeof x === 'number'); return xs.length === 0 ? null : mean(xs) }
      const names = Object.keys(ls[0].procs)
      cpuCells.push([
        ...names.map((n) => `${NAMES[n] ?? n} ${Math.round(avg((l) => l.procs[n].cpu_pct))} (+${Math.round(avg((l) => l.procs[n].runq_wait_pct))})`),
        `gen ${Math.round(avg((l) => l.gen_cpu_pct))} (+${Math.round(avg((l) => l.gen_runq_wait_pct))})`
      ].join(' · '))
      costCells.push(`${names.map((n) => `${NAMES[n] ?? n} ${fmt(avg((l) => l.procs[n].cpu_us_per_msg))}`).join(' + ')} = **${fmt(avg((l) => l.server_cpu_us_per_msg))}** (gen ${fmt(avg((l) => l.gen_cpu_us_per_msg))})`)
    }
    results.push(`| ${title} | ${cells.join(' | ')} |`)
    cpu.push(`| ${short} | ${cpuCells.join(' | ')} |`)
    cost.push(`| ${short} | ${costCells.join(' | ')} |`)
  }
  return [
    `### Results (mean of repetitions; ±: half the spread between repetitions when ≥ 5 %; N.NN×: ratio to "${ref?.label ?? REF}")`,
    '', head, ...results, '',
    '### CPU during each measurement, % of one core (+ % of the time the main thread waited for a CPU)',
    '',
    'A, B: our broker processes (all threads); Redis: redis-server; gen: the load generator (this',
    'process, all threads). All from /proc over the measured window.',
    '', head, ...cpu, '',
    '### Server CPU per delivered message (µs): node A + node B + Redis = total (generator)',
    '', head, ...cost
  ].join('\n')
}
