// Turns the JSON lines of a run into two Markdown tables: the results (mean over repetitions,
// ratio vs Mosquitto, spread between repetitions) and the CPU behind each cell (broker: share
// of its one pinned core; generator: share of one core, out of gen_cores).

const ROWS = [
  { scenario: 'qos1_throughput', title: 'QoS 1 delivered msg/s', get: (l) => l.value, better: 'higher', syscalls: true },
  { scenario: 'qos0_throughput', title: 'QoS 0 delivered msg/s', get: (l) => l.value, better: 'higher', syscalls: true },
  { scenario: 'qos1_latency', title: 'QoS 1 latency p50 / p99 at 1000 msg/s (ms)', costTitle: 'QoS 1 at 1000 msg/s', get: (l) => [l.p50_ms, l.p99_ms], better: 'lower', syscalls: true },
  { scenario: 'connects', title: 'connects/s (TLS 1.3 full handshake + CONNECT/CONNACK/DISCONNECT)', get: (l) => l.value, better: 'higher' },
  { scenario: 'connects_cold_bcrypt12', title: 'connects/s, first login, bcrypt cost 12 (full only)', get: (l) => l.value, better: 'higher' },
  { scenario: 'idle_memory', title: 'idle memory per TLS connection (KiB, RSS delta / N)', costTitle: 'opening the idle connections (TLS + login)', get: (l) => l.value, better: 'lower' },
  { scenario: 'idle_memory_marginal', title: 'idle memory per TLS connection, marginal (KiB, RSS delta over the second N/2)', get: (l) => l.value, better: 'lower', noCpu: true }
]

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length
const fmt = (x) => x === null || x === undefined || Number.isNaN(x) ? '–' : x >= 100 ? Math.round(x).toLocaleString('en-US') : x >= 10 ? x.toFixed(1) : x.toFixed(2)

function values (lines, broker, row) {
  return lines.filter((l) => l.broker === broker && l.scenario === row.scenario && !l.error).map(row.get)
}

/** mean of reps and ± half the range, as a share of the mean. */
function summarise (xs) {
  const ok = xs.filter((x) => typeof x === 'number' && Number.isFinite(x))
  if (ok.length === 0) return null
  const m = mean(ok)
  return { mean: m, spread: ok.length > 1 && m !== 0 ? (Math.max(...ok) - Math.min(...ok)) / 2 / m : 0 }
}

export function markdown (lines, brokers) {
  const ref = brokers.find((b) => b.key === 'mosquitto')
  const pair = brokers.find((b) => b.key === 'haproxy')
  const pairNote = pair === undefined ? [] : [
    '',
    `"${pair.label}": HAProxy and our broker, both on the one pinned core, counted together: CPU,`,
    'memory (RSS) and CPU per unit are the sums of the two processes; (+N) sums both main threads\'',
    'run-queue waits, so it includes each waiting while the other runs (the JSON lines split them: `procs`).'
  ]
  const head = `| metric | ${brokers.map((b) => b.label).join(' | ')} |\n|---|${brokers.map(() => '---|').join('')}`
  const results = []
  const cpu = []
  const cost = []
  const calls = []
  for (const row of ROWS) {
    const cells = []
    const cpuCells = []
    for (const b of brokers) {
      const xs = values(lines, b.key, row)
      const ms = lines.filter((l) => l.broker === b.key && l.scenario === row.scenario && !l.error)
      const avg = (k) => Math.round(mean(ms.map((l) => l[k])))
      cpuCells.push(ms.length === 0 ? '–' : `${avg('broker_cpu_pct')} % (+${avg('broker_runq_wait_pct')}) / ${avg('gen_cpu_pct')} % (+${avg('gen_runq_wait_pct')})`)
      if (xs.length === 0) { cells.push('–'); continue }
      const parts = Array.isArray(xs[0]) ? [0, 1].map((i) => summarise(xs.map((x) => x[i]))) : [summarise(xs)]
      const refXs = ref && b !== ref ? values(lines, ref.key, row) : []
      const refParts = refXs.length === 0 ? [] : Array.isArray(refXs[0]) ? [0, 1].map((i) => summarise(refXs.map((x) => x[i]))) : [summarise(refXs)]
      let cell = parts.map((p) => p === null ? '–' : fmt(p.mean)).join(' / ')
      const spread = Math.max(...parts.map((p) => p?.spread ?? 0))
      if (spread >= 0.05) cell += ` (±${Math.round(spread * 100)} %)`
      if (refParts.length > 0 && refParts.every((p) => p !== null && p.mean > 0)) {
        cell += ` · ${parts.map((p, i) => p === null ? '–' : (p.mean / refParts[i].mean).toFixed(2)).join(' / ')}×`
      }
      cells.push(cell)
    }
    results.push(`| ${row.title} (${row.better} is better) | ${cells.join(' | ')} |`)
    if (row.noCpu) continue // measured inside another row's window
    const us = (key) => brokers.map((b) => {
      const xs = lines.filter((l) => l.broker === b.key && l.scenario === row.scenario && typeof l[key] === 'number').map((l) => l[key])
      return xs.length === 0 ? null : mean(xs)
    })
    const [bUs, headroom] = [us('broker_cpu_us_per_unit'), us('gen_headroom')]
    const refUs = ref ? bUs[brokers.indexOf(ref)] : null
    cost.push(`| ${row.costTitle ?? row.title} | ${brokers.map((b, i) => bUs[i] === null ? '–'
      : `${fmt(bUs[i])} µs${refUs && b !== ref ? ` · ${(bUs[i] / refUs).toFixed(2)}×` : ''} (gen headroom ${headroom[i] === null ? '–' : headroom[i].toFixed(1)}×)`).join(' | ')} |`)
    cpu.push(`| ${row.title} | ${cpuCells.join(' | ')} |`)
    if (row.syscalls) {
      const [reads, writes] = [us('broker_reads_per_unit'), us('broker_writes_per_unit')]
      calls.push(`| ${row.costTitle ?? row.title} | ${brokers.map((b, i) => reads[i] === null || writes[i] === null ? '–' : `${reads[i].toFixed(2)} / ${writes[i].toFixed(2)}`).join(' | ')} |`)
    }
  }
  return [
    '### Results (mean of repetitions; ±: half the spread between repetitions when ≥ 5 %; N.NN×: ratio to Mosquitto)',
    ...pairNote,
    '', head, ...results, '',
    '### CPU during each measurement: broker / load generator, in % of one core',
    '',
    'Broker: its process (all threads) on its one pinned core; (+N): % of the time its main thread was',
    'runnable but waiting for the CPU (other processes on that core). Generator: this process, all',
    'threads, on the other core(s); (+N): its threads\' run-queue waits, summed. A broker whose CPU +',
    'wait is ~100 % was never idle waiting for work: the broker, not the generator, set the pace.',
    '', head, ...cpu, '',
    '### Broker CPU per unit of work (µs of CPU per delivered message / connect / idle connection opened; N.NN×: ratio to Mosquitto)',
    '',
    'Less disturbed by other load on the machine than the rates. Generator headroom: the rate the',
    'generator could drive on all its cores / the broker\'s rate on a whole core (both from CPU per',
    'unit); below 1.0×, the generator, not the broker, would be the bottleneck on a quiet machine.',
    '', head, ...cost, '',
    '### Broker system calls per delivered message: reads / writes (/proc/<pid>/io syscr / syscw)',
    '',
    'A delivered QoS 1 message is at least two packets in (PUBLISH, PUBACK) and two out (PUBACK,',
    'PUBLISH), QoS 0 one in and one out: one call per packet is 2 / 2 and 1 / 1; below that, several',
    'packets share a call (on TLS, a write of several packets is one record when they were written together).',
    '', head, ...calls
  ].join('\n')
}
