// Running the brokers under test: each process pinned to its core (taskset), started, watched
// for readiness, measured from /proc (CPU, run-queue wait, RSS) and stopped; every process this
// bench starts is in one set, so an exit path kills them all.
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { connect, createServer } from 'node:net'

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100
// Our brokers (and the floor, a Node process too) run with the malloc setting `npm start`, the systemd unit and the image give them
// (docs/deploy.md, "Memory"); BENCH_COMPARE_GLIBC_TUNABLES= (empty) runs them with glibc's defaults.
const OUR_ENV = { ...process.env, GLIBC_TUNABLES: process.env.BENCH_COMPARE_GLIBC_TUNABLES ?? 'glibc.malloc.mmap_threshold=65536' }

/** Resolves true once something accepts a TCP connection on 127.0.0.1:`port`. */
function accepts (port) {
  return new Promise((resolve) => {
    const s = connect({ host: '127.0.0.1', port })
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => { s.destroy(); resolve(false) })
  })
}

// ---- running one ---------------------------------------------------------------------------

export function freePort () {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
    s.on('error', reject)
  })
}

const running = new Set() // every process started (broker, HAProxy), for cleanup on SIGINT / errors

/** Spawns one process pinned to `cpu` (taskset execs: the pid is the program's), output to `logFile`. */
function spawnPinned (name, command, args, { cpu, logFile, env }) {
  const fd = openSync(logFile, 'w')
  const [cmd, argv] = cpu === undefined ? [command, args] : ['taskset', ['-c', String(cpu), command, ...args]]
  const child = spawn(cmd, argv, { stdio: ['ignore', fd, fd], env })
  closeSync(fd)
  const proc = { name, pid: child.pid, child, logFile, exited: null }
  proc.exited = new Promise((resolve) => child.once('exit', (code, signal) => { running.delete(proc); resolve({ code, signal }) }))
  running.add(proc)
  return proc
}

/**
 * Starts the broker pinned to `cpu` (taskset -c; unpinned when `cpu` is undefined), its stdout
 * and stderr to `logFile`; resolves once its ready line is logged. A kind with a `companion`
 * (HAProxy in front of ours) gets it started next, on the same core, output to `logFile` with
 * `.<name>.log`; ready once it accepts a TCP connection on `port`. `handle.procs` lists both
 * (the broker first), `handle.pids` their pids: what every measurement sums over.
 */
export async function startBroker (kind, { cpu, logFile }) {
  const port = await freePort()
  const { command, args, ready, companion } = await kind.start(port)
  const broker = spawnPinned(kind.ours ? 'ours' : kind.key, command, args, { cpu, logFile, env: kind.ours || kind.node ? OUR_ENV : process.env })
  const handle = { kind, port, pid: broker.pid, pids: [broker.pid], procs: [broker], logFile, exited: broker.exited }
  const fail = async (why) => {
    await stopBroker(handle)
    const logs = handle.procs.map((p) => `--- ${p.name}:\n${readFileSync(p.logFile, 'utf8').slice(-2000)}`).join('\n')
    throw new Error(`${kind.key} did not start (${why}):\n${logs}`)
  }
  const deadline = Date.now() + 30_000
  while (!ready.test(readFileSync(logFile, 'utf8'))) {
    if (!running.has(broker)) await fail('broker exited')
    if (Date.now() > deadline) await fail('broker not ready in 30 s')
    await sleep(50)
  }
  if (companion !== undefined) {
    const proc = spawnPinned(companion.name, companion.command, companion.args, { cpu, logFile: `${logFile}.${companion.name}.log`, env: process.env })
    handle.procs.push(proc)
    handle.pids.push(proc.pid)
    while (!(await accepts(companion.port))) {
      if (!running.has(proc)) await fail(`${companion.name} exited`)
      if (Date.now() > deadline) await fail(`${companion.name} not accepting in 30 s`)
      await sleep(50)
    }
    if (!running.has(proc)) await fail(`${companion.name} exited`) // another process took the port?
  }
  return handle
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * SIGTERM, then SIGKILL after 10 s (ours drains for at most shutdown.drainTimeout = 5 s), to
 * every process of the handle at once. Resolves with the broker's `{ code, signal }`, for a pair
 * with `companions: { haproxy: { code, signal } }` added.
 */
export async function stopBroker (handle) {
  const exits = await Promise.all(handle.procs.map(async (p) => {
    if (!running.has(p)) return p.exited
    p.child.kill('SIGTERM')
    const timer = setTimeout(() => p.child.kill('SIGKILL'), 10_000)
    const r = await p.exited
    clearTimeout(timer)
    return r
  }))
  if (exits.length === 1) return exits[0]
  return { ...exits[0], companions: Object.fromEntries(handle.procs.slice(1).map((p, i) => [p.name, exits[i + 1]])) }
}

/** Kills (by pid, only what this bench started) every process still running: for exit paths. */
export function killAll () {
  for (const p of running) { try { p.child.kill('SIGKILL') } catch {} }
}

/** Sums `f(pid)` over the handle's processes (the broker, and HAProxy in front of it). */
const sum = (handle, f) => handle.pids.reduce((a, pid) => a + f(pid), 0)
/** Run-queue wait of the handle's processes' main threads, summed (HAProxy runs one thread). */
export const runqWaitSeconds = (handle) => sum(handle, brokerRunqWaitSeconds)
/** CPU seconds (utime + stime, all threads) of the handle's processes, summed. */
export const cpuSeconds = (handle) => sum(handle, brokerCpuSeconds)
/** Read and write system calls (/proc/<pid>/io syscr, syscw) of the handle's processes, summed. */
export const syscalls = (handle) => handle.pids.reduce((a, pid) => { const c = brokerSyscalls(pid); return { reads: a.reads + c.reads, writes: a.writes + c.writes } }, { reads: 0, writes: 0 })
/** VmRSS of the handle's processes, summed. */
export const rssKiB = (handle) => sum(handle, brokerRssKiB)

/**
 * Seconds the broker's main thread waited for a CPU while runnable (/proc/<pid>/schedstat):
 * when other work shares its core, this grows and the broker's CPU share drops below 100 %.
 */
export function brokerRunqWaitSeconds (pid) {
  try { return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9 } catch { return NaN }
}

/** CPU seconds the broker process used so far, all threads (bcrypt workers included). */
export function brokerCpuSeconds (pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // fields from 3 (state) on
  return (Number(f[11]) + Number(f[12])) / CLK_TCK // utime + stime, fields 14 and 15
}

/**
 * Read- and write-type system calls the process has made, all threads (/proc/<pid>/io: read,
 * readv, recvmsg... in syscr; write, writev, sendmsg... in syscw). How many packets a broker
 * puts in one socket write shows here: one TLS record and one syscall per packet, or several
 * packets in one. NaN where /proc/<pid>/io cannot be read.
 */
export function brokerSyscalls (pid) {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8')
    return { reads: Number(io.match(/^syscr:\s+(\d+)/m)[1]), writes: Number(io.match(/^syscw:\s+(\d+)/m)[1]) }
  } catch { return { reads: NaN, writes: NaN } }
}

export function brokerRssKiB (pid) {
  return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)/m)[1])
}

/**
 * What the broker logged that a reader should see: our warn/error lines and limit events by
 * event name; Mosquitto's error/warning lines (first words). Logins and connects are counted.
 */
export function summariseLog (handle) {
  const text = readFileSync(handle.logFile, 'utf8')
  const notable = {}
  const bump = (k) => { notable[k] = (notable[k] ?? 0) + 1 }
  // HAProxy (no `log` line in its config): its own [WARNING] / [ALERT] / [NOTICE] lines on stderr.
  for (const p of handle.procs.slice(1)) {
    for (const line of readFileSync(p.logFile, 'utf8').split('\n')) {
      if (/\[(WARNING|ALERT|NOTICE)\]/.test(line)) bump(`${p.name}: ${line.replace(/^.*?\[/, '[').replace(/\d+/g, 'N').slice(0, 100)}`)
    }
  }
  if (handle.kind.ours) {
    for (const line of text.split('\n')) {
      if (line === '') continue
      let o
      try { o = JSON.parse(line) } catch { bump('unparsed line'); continue }
      const ev = o.event ?? o.msg
      if (o.level >= 40 || /^limit\.|refused|failed|denied/.test(String(ev))) bump(`${ev} (level ${o.level})`)
    }
  } else {
    for (const line of text.split('\n')) {
      const m = line.match(/^\d+: (.*)$/)
      const msg = m?.[1] ?? line
      if (/error|warning|denied|refused|out of memory|dropped|exceeded/i.test(msg)) bump(msg.replace(/\d+/g, 'N').slice(0, 100))
    }
  }
  return notable
}

/** Seconds this process's threads (the generator) waited for a CPU while runnable, summed. */
export function genRunqWaitSeconds () {
  let ns = 0
  for (const tid of readdirSync('/proc/self/task')) {
    try { ns += Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[1]) } catch {} // a thread may be gone
  }
  return ns / 1e9
}
