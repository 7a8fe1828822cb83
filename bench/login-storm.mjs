// Measures, on this machine, what a login storm does to clients that are already connected:
// one publisher sends a steady QoS 1 stream to one subscriber through the broker (TLS, ACL
// checks on publish and delivery) while STORM clients log in at once (real TLS, bcrypt cost 12
// like production). Reports publish-to-delivery latency before and during the storm, how many
// storm logins were accepted or told "server busy" (0x89), how long the storm took, and the
// broker's event-loop delay. The storm clients run in a child process so their own TLS work
// does not count against the broker's event loop. Bounded: 300 s per storm.
// Scenarios (BENCH_SCENARIOS, comma-separated): default (auth.loginQueue as shipped),
// nowait (maxWaiting = STORM: every login waits), oneworker (auth.workers 1).
import { fork } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import bcrypt from 'bcryptjs'
import mqtt from 'mqtt'
import { pino } from 'pino'

const STORM = Number(process.env.BENCH_STORM ?? 500)
const RATE = Number(process.env.BENCH_RATE ?? 50) // stream messages per second
const BASELINE_MS = 3000
const PASSWORD = 'bench-password'

if (process.env.BENCH_STORM_CHILD === '1') {
  // The storm: every client starts connecting in the same tick; each reports once.
  process.once('message', ({ port, ca, usernames }) => {
    const clients = []
    const t0 = performance.now()
    const results = usernames.map((username, i) => new Promise((resolve) => {
      const c = mqtt.connect({
        host: '127.0.0.1', port, protocol: 'mqtts', ca: Buffer.from(ca), servername: 'localhost', protocolVersion: 5,
        reconnectPeriod: 0, connectTimeout: 300_000, clientId: `storm-${i}`, username, password: PASSWORD
      })
      clients.push(c)
      c.once('connect', () => resolve({ r: 'ok', ms: performance.now() - t0 }))
      c.once('error', (err) => resolve({ r: typeof err.code === 'number' ? err.code : String(err.code ?? err.message), ms: performance.now() - t0 }))
      c.once('close', () => resolve({ r: 'closed', ms: performance.now() - t0 }))
    }))
    Promise.all(results).then((rs) => {
      process.send({ results: rs }, () => {
        for (const c of clients) c.end(true)
        process.exit(0)
      })
    })
  })
} else {
  await main()
}

function stats (xs) {
  if (xs.length === 0) return { n: 0 }
  const s = [...xs].sort((a, b) => a - b)
  const at = (p) => +s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))].toFixed(2)
  return { n: s.length, p50: at(50), p99: at(99), max: at(100) }
}

async function scenario (name, auth) {
  const { createBastion, createStore } = await import('../dist/bastion.js')
  const { parseConfig } = await import('../dist/config/schema.js')
  const { initCertificates } = await import('../dist/certs/issue.js')
  const { currentCode, newSecret } = await import('../dist/crypto/totp.js')
  const dir = mkdtempSync(join(tmpdir(), 'bastion-storm-'))
  await initCertificates({ outDir: join(dir, 'certs') })
  const config = parseConfig({
    listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }],
    auth: { store: { type: 'file', path: 'data/users.json' }, lockout: { maxFailuresPerUser: 0, maxFailuresPerIp: 0 }, ...auth },
    limits: { maxConnectionsPerIp: 0, publishRate: { messages: 100_000 } },
    log: { level: 'silent' }
  }, dir)
  const hash = bcrypt.hashSync(PASSWORD, 12)
  const users = createStore(config, pino({ level: 'silent' }))
  const meterSecret = newSecret()
  await users.add({ username: 'meter', passwordHash: hash, totpSecret: meterSecret, enabled: true, createdAt: new Date().toISOString() })
  const secrets = []
  for (let i = 0; i < STORM; i++) {
    secrets.push(newSecret())
    await users.add({ username: `dev${i}`, passwordHash: hash, totpSecret: secrets[i], enabled: true, createdAt: new Date().toISOString() })
  }
  await users.close()
  const bastion = await createBastion(config)
  const port = bastion.listeners[0].port
  const ca = readFileSync(join(dir, 'certs', 'ca.crt'))
  const base = { host: '127.0.0.1', port, protocol: 'mqtts', ca, servername: 'localhost', protocolVersion: 5, reconnectPeriod: 0 }
  // One account, two connections: the second login uses the next TOTP step (replay protection).
  const sub = await mqtt.connectAsync({ ...base, clientId: 'meter-sub', username: `meter|${currentCode(meterSecret)}`, password: PASSWORD })
  const pub = await mqtt.connectAsync({ ...base, clientId: 'meter-pub', username: `meter|${currentCode(meterSecret, Date.now() + 30_000)}`, password: PASSWORD })
  await sub.subscribeAsync('metrics/meter/#', { qos: 1 })

  const sent = new Map()
  const latencies = [] // [sentAt, ms]
  sub.on('message', (_t, payload) => {
    const t0 = sent.get(payload.toString())
    if (t0 !== undefined) latencies.push([t0, performance.now() - t0])
  })
  // Latency counts from when a message was due, not when the timer got to run: the publisher
  // shares the broker's event loop, and a stalled loop must show up as latency.
  let seq = 0
  let stream
  const streamStart = performance.now()
  const due = (n) => streamStart + n * 1000 / RATE
  const tick = () => {
    while (due(seq) <= performance.now()) {
      const id = String(seq)
      sent.set(id, due(seq))
      seq++
      pub.publish('metrics/meter/Temperatura', id, { qos: 1 })
    }
    stream = setTimeout(tick, Math.max(0, due(seq) - performance.now()))
  }
  tick()

  await new Promise((resolve) => setTimeout(resolve, BASELINE_MS))
  const loop = monitorEventLoopDelay({ resolution: 10 })
  const child = fork(new URL(import.meta.url), [], { env: { ...process.env, BENCH_STORM_CHILD: '1' } })
  const usernames = secrets.map((s, i) => `dev${i}|${currentCode(s)}`)
  const stormStart = performance.now()
  loop.enable()
  child.send({ port, ca: ca.toString(), usernames })
  const storm = await Promise.race([
    new Promise((resolve) => child.once('message', (m) => resolve(m.results))),
    new Promise((resolve) => setTimeout(() => resolve(undefined), 300_000))
  ])
  const stormEnd = performance.now()
  loop.disable()
  await new Promise((resolve) => setTimeout(resolve, 1000))
  clearTimeout(stream)
  await new Promise((resolve) => setTimeout(resolve, 1000))
  child.kill()

  const before = latencies.filter(([at]) => at < stormStart).map(([, ms]) => ms)
  const during = latencies.filter(([at]) => at >= stormStart && at < stormEnd).map(([, ms]) => ms)
  // 0x86 here means a code expired while its login waited: the queue outlasted the TOTP window.
  const LABELS = { ok: 'accepted', 137: 'busy0x89', 134: 'refused0x86', 136: 'unavailable0x88' }
  const outcome = {}
  for (const { r } of storm ?? []) {
    const label = LABELS[r] ?? String(r)
    outcome[label] = (outcome[label] ?? 0) + 1
  }
  const result = {
    scenario: name,
    loginQueue: config.auth.loginQueue,
    workers: config.auth.workers,
    storm: storm === undefined
      ? { timedOut: true }
      : {
          clients: STORM,
          ...outcome,
          seconds: +((stormEnd - stormStart) / 1000).toFixed(2),
          acceptedLoginMs: stats(storm.filter((x) => x.r === 'ok').map((x) => x.ms)),
          busyAnswerMs: stats(storm.filter((x) => x.r === 0x89).map((x) => x.ms))
        },
    deliveryMs: { before: stats(before), during: stats(during) },
    lost: seq - latencies.length,
    // Lag beyond the 10 ms sampling interval the histogram includes.
    eventLoopLagMs: Object.fromEntries([['p50', loop.percentile(50)], ['p99', loop.percentile(99)], ['max', loop.max]].map(([k, ns]) => [k, +Math.max(0, ns / 1e6 - 10).toFixed(2)]))
  }
  await sub.endAsync(true).catch(() => {})
  await pub.endAsync(true).catch(() => {})
  await bastion.close()
  rmSync(dir, { recursive: true, force: true })
  return result
}

async function main () {
  const SCENARIOS = {
    default: {},
    nowait: { loginQueue: { maxWaiting: STORM } },
    oneworker: { workers: 1 }
  }
  const names = (process.env.BENCH_SCENARIOS ?? 'default,nowait').split(',')
  // Other work on the machine shows up in every number: the load average says how much there was.
  const out = { machine: { cpus: availableParallelism(), node: process.version, loadAverage1m: +loadavg()[0].toFixed(2) }, stormClients: STORM, streamPerSecond: RATE, scenarios: [] }
  for (const n of names) {
    if (SCENARIOS[n] === undefined) throw new Error(`BENCH_SCENARIOS: unknown scenario ${n} (one of ${Object.keys(SCENARIOS).join(', ')})`)
    out.scenarios.push(await scenario(n, SCENARIOS[n]))
  }
  console.log(JSON.stringify(out, null, 2))
}
