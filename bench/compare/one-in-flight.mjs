#!/usr/bin/env node
// One message in flight: the path a QoS 1 message takes through a broker when nothing queues
// behind it, next to what a TLS round trip alone costs. The latency scenario of run.mjs sends in
// bursts (8 publishers on one clock), so its p99 is mostly queueing; this one is not.
//
// Subjects, each a process pinned to the first CPU (the client on the others), alternated in
// rounds so the machine's drift falls on all of them:
// - mosquitto: Debian's broker, TLS, anonymous;
// - aedes: this build's engine (dist/vendor/aedes: aedes plus our patch set) on node:tls, with
//   none of our hooks; `--baseline DIR` adds the engine of another build;
// - node-echo / socat-echo: a TLS server that sends back what it reads (node:tls, and socat's
//   OpenSSL), the floor of one read and one write.
// Measured by an mqtt.js client (a subscriber and a publisher; the next PUBLISH leaves when the
// last one was delivered and acknowledged), or a raw TLS socket for the echoes: round-trip time
// percentiles, and the subject's CPU (/proc) per message or echo. Prints a JSON line per subject,
// then a table. See README.md here.
import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { connect as tlsConnect, createServer as createTlsServer } from 'node:tls'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import mqtt from 'mqtt'
import { brokerCpuSeconds, freePort } from './processes.mjs'

const USAGE = `Usage: node bench/compare/one-in-flight.mjs [options]

  --rounds N        rounds; each subject runs once per round, in turn (12)
  --warmup S        seconds each subject runs first, not counted (4)
  --messages N      messages (or echoes) per subject and round; the first 20 of each are left out (400)
  --baseline DIR    also the aedes engine of another build (DIR/dist/vendor/aedes)
  -h, --help        this text
`
const HERE = fileURLToPath(new URL('.', import.meta.url))
// Subjects on the first CPU, the client on the others, when there are two and taskset.
const PINNED = availableParallelism() > 1 && onPath('taskset')
const ROOT = resolve(HERE, '..', '..')
const WARM = 20
const MOSQUITTO = '/usr/sbin/mosquitto'

// ---- the servers, when this file runs as one: --serve aedes DIR | --serve echo -------------
if (process.argv[2] === '--serve') {
  const [, , , what, dir, key, cert] = process.argv
  const options = { key: readFileSync(key), cert: readFileSync(cert) }
  let server
  if (what === 'aedes') {
    const { Aedes } = await import(join(resolve(dir), 'dist', 'vendor', 'aedes', 'aedes.js'))
    const broker = await Aedes.createBroker({})
    server = createTlsServer(options, (s) => broker.handle(s))
  } else {
    server = createTlsServer(options, (s) => { s.setNoDelay(true); s.on('data', (d) => s.write(d)) })
  }
  server.listen(Number(process.argv[7]), '127.0.0.1', () => console.log('ready'))
} else {
  await main().catch((err) => { console.error(`one-in-flight: ${err.message}`); process.exit(1) })
}

function fail (message) {
  console.error(`one-in-flight: ${message.split('\n')[0]}`)
  process.exit(2)
}

async function main () {
  let flags
  try {
    flags = parseArgs({ options: { rounds: { type: 'string' }, messages: { type: 'string' }, warmup: { type: 'string' }, baseline: { type: 'string' }, help: { type: 'boolean', short: 'h' } } }).values
  } catch (err) { fail(err.message) }
  if (flags.help) { process.stdout.write(USAGE); return }
  const count = (name, fallback, min) => {
    const raw = flags[name] ?? String(fallback)
    const n = Number(raw)
    if (!/^\d+$/.test(raw) || n < min) fail(`--${name} must be a whole number of at least ${min}, not ${JSON.stringify(raw)}`)
    return n
  }
  const rounds = count('rounds', 12, 1)
  const messages = count('messages', 400, WARM + 1)
  const warmupS = count('warmup', 4, 0)
  const baseline = flags.baseline === undefined ? undefined : resolve(flags.baseline)
  if (baseline !== undefined && !existsSync(join(baseline, 'dist', 'vendor', 'aedes', 'aedes.js'))) fail(`--baseline ${flags.baseline}: no built engine there (dist/vendor/aedes/aedes.js; run npm run build in it)`)
  if (!existsSync(join(ROOT, 'dist', 'vendor', 'aedes', 'aedes.js'))) fail('this build has no engine: run npm run build first')

  // The client on every CPU but the first; the subjects on the first.
  const cpus = availableParallelism()
  if (PINNED) execFileSync('taskset', ['-a', '-p', '-c', `1-${cpus - 1}`, String(process.pid)], { stdio: 'ignore' })
  else console.error('one-in-flight: not pinned (one CPU, or no taskset): subjects and client share the CPUs')

  const dir = mkdtempSync(join(tmpdir(), 'bastion-one-in-flight-'))
  const started = []
  const cleanup = () => { for (const s of started) s.child.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }) }
  process.once('SIGINT', () => { cleanup(); process.exit(130) })
  try {
    const key = join(dir, 'key.pem')
    const cert = join(dir, 'cert.pem')
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=127.0.0.1'], { stdio: 'ignore' })
    // Mosquitto started as root reads its files as the mosquitto user.
    chmodSync(dir, 0o755)
    chmodSync(key, 0o644)

    const subjects = []
    if (existsSync(MOSQUITTO)) subjects.push({ name: 'mosquitto', kind: 'mqtt', start: (port) => startMosquitto(dir, key, cert, port) })
    else console.error(`one-in-flight: ${MOSQUITTO} not found: no Mosquitto row`)
    subjects.push({ name: 'aedes, this build', kind: 'mqtt', start: (port) => serve(['aedes', ROOT, key, cert], port) })
    if (baseline !== undefined) subjects.push({ name: `aedes, ${flags.baseline}`, kind: 'mqtt', start: (port) => serve(['aedes', baseline, key, cert], port) })
    subjects.push({ name: 'node:tls echo', kind: 'echo', start: (port) => serve(['echo', '-', key, cert], port) })
    if (onPath('socat')) subjects.push({ name: 'socat echo (OpenSSL)', kind: 'echo', start: (port) => startProcess('socat', [`OPENSSL-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork,cert=${cert},key=${key},verify=0,nodelay`, 'PIPE'], port), perConnection: true })
    else console.error('one-in-flight: socat not found: no socat row')

    for (const s of subjects) {
      s.port = await freePort()
      s.proc = await s.start(s.port)
      started.push(s.proc)
      s.client = await (s.kind === 'mqtt' ? mqttPair(s.port) : echoSocket(s.port)).catch((err) => { throw new Error(`${s.name}: ${err.message}`) })
      // socat forks a process per connection: that one does the work.
      s.pid = s.perConnection ? newestChild(s.proc.pid) : s.proc.pid
      s.rtt = []
      s.cpuUs = 0
      s.n = 0
    }
    // Not counted: the Node subjects' JIT takes a few seconds to settle (a one-in-flight aedes
    // had its slowest 0.3 % of messages, all over 1 ms, in its first 3 s of 20,000 messages).
    for (const s of subjects) {
      const until = performance.now() + warmupS * 1000
      while (performance.now() < until) await (s.kind === 'mqtt' ? pingPong(s.client, 100) : echoes(s.client, 100))
    }
    for (let round = 0; round < rounds; round++) {
      // Alternate the order, so no subject always runs first.
      for (const s of round % 2 === 0 ? subjects : [...subjects].reverse()) {
        const before = brokerCpuSeconds(s.pid)
        const rtt = s.kind === 'mqtt' ? await pingPong(s.client, messages) : await echoes(s.client, messages)
        s.cpuUs += (brokerCpuSeconds(s.pid) - before) * 1e6
        s.n += messages
        s.rtt.push(...rtt.slice(WARM))
      }
    }
    const rows = subjects.map((s) => ({
      bench: 'one-in-flight',
      subject: s.name,
      unit: s.kind === 'mqtt' ? 'QoS 1 message' : 'echo',
      count: s.rtt.length,
      p50_us: pct(s.rtt, 50),
      p90_us: pct(s.rtt, 90),
      p99_us: pct(s.rtt, 99),
      cpu_us_per_unit: Math.round(s.cpuUs / s.n)
    }))
    for (const r of rows) console.log(JSON.stringify(r))
    console.log('\n| subject | per | round trip p50 / p90 / p99 (µs) | its CPU per unit (µs) |\n|---|---|---|---|')
    for (const r of rows) console.log(`| ${r.subject} | ${r.unit} | ${r.p50_us} / ${r.p90_us} / ${r.p99_us} | ${r.cpu_us_per_unit} |`)
    for (const s of subjects) s.kind === 'mqtt' ? (s.client.pub.end(true), s.client.sub.end(true)) : s.client.destroy()
  } finally {
    cleanup()
  }
}

function onPath (command) {
  try { execFileSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }); return true } catch { return false }
}

function newestChild (pid) {
  return Number(execFileSync('pgrep', ['-n', '-P', String(pid)]).toString().trim())
}

/** Starts `command` on the first CPU (when pinning); resolves once `port` accepts a connection. */
async function startProcess (command, args, port, ready) {
  const child = spawn(PINNED ? 'taskset' : command, PINNED ? ['-c', '0', command, ...args] : args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d) => { output += d })
  child.stderr.on('data', (d) => { output += d })
  const deadline = Date.now() + 10_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${command} exited: ${output.slice(-500)}`)
    if ((ready === undefined || ready.test(output)) && await accepts(port)) return { pid: child.pid, child }
    if (Date.now() > deadline) { child.kill('SIGKILL'); throw new Error(`${command} did not start within 10 s: ${output.slice(-500)}`) }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

function serve (args, port) {
  return startProcess(process.execPath, [fileURLToPath(import.meta.url), '--serve', ...args, String(port)], port, /ready/)
}

function startMosquitto (dir, key, cert, port) {
  const conf = join(dir, `mosquitto-${port}.conf`)
  writeFileSync(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\ncertfile ${cert}\nkeyfile ${key}\npersistence false\nlog_dest stderr\n`)
  return startProcess(MOSQUITTO, ['-c', conf], port)
}

function accepts (port) {
  return new Promise((resolve) => {
    const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false })
    s.once('secureConnect', () => { s.destroy(); resolve(true) })
    s.once('error', () => { s.destroy(); resolve(false) })
  })
}

async function mqttPair (port) {
  const opts = { host: '127.0.0.1', port, protocol: 'mqtts', rejectUnauthorized: false, protocolVersion: 5, reconnectPeriod: 0 }
  const sub = await mqtt.connectAsync({ ...opts, clientId: `sub-${port}` })
  await sub.subscribeAsync('one/in-flight', { qos: 1 })
  const pub = await mqtt.connectAsync({ ...opts, clientId: `pub-${port}` })
  return { sub, pub }
}

/** `n` QoS 1 messages, one at a time: each from PUBLISH to delivery (µs); the next after its PUBACK. */
async function pingPong ({ sub, pub }, n) {
  const payload = Buffer.alloc(64)
  const rtt = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    const delivered = new Promise((resolve) => sub.once('message', resolve))
    const acked = pub.publishAsync('one/in-flight', payload, { qos: 1 })
    await delivered
    rtt.push((performance.now() - t0) * 1000)
    await acked
  }
  return rtt
}

async function echoSocket (port) {
  const s = tlsConnect({ host: '127.0.0.1', port, rejectUnauthorized: false })
  await new Promise((resolve, reject) => { s.once('secureConnect', resolve); s.once('error', reject) })
  s.setNoDelay(true)
  return s
}

/** `n` echoes of 70 bytes (a small PUBLISH), one at a time (µs each). */
async function echoes (s, n) {
  const data = Buffer.alloc(70)
  const rtt = []
  for (let i = 0; i < n; i++) {
    const t0 = performance.now()
    let got = 0
    await new Promise((resolve) => {
      const on = (d) => { got += d.length; if (got >= data.length) { s.off('data', on); resolve() } }
      s.on('data', on)
      s.write(data)
    })
    rtt.push((performance.now() - t0) * 1000)
  }
  return rtt
}

function pct (xs, p) {
  const sorted = [...xs].sort((a, b) => a - b)
  return Math.round(sorted[Math.min(sorted.length - 1, Math.floor(p / 100 * sorted.length))])
}
