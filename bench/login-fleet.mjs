// Login fleet bench: what the login path costs when thousands of devices connect, publish a few
// readings and disconnect every minute. The broker runs in this process (built from dist/, SQLite
// user store, real TLS, bcrypt in the worker pool); the clients run in a forked child process
// (raw tls.connect + mqtt-packet CONNECT/DISCONNECT, lighter than mqtt.js), so their TLS work
// does not count as the broker's CPU. Prints ONE JSON line per scenario on stdout; progress goes
// to stderr. Pick scenarios with BENCH_SCENARIOS=warm_storm,cold_storm,store_size,bogus (default all).
//
// Is the generator the bottleneck? Every scenario reports `generator` = the child's CPU seconds
// and event-loop utilisation during the measured phase: an ELU near 1 means the clients, not the
// broker, set the pace. On a 2-core machine the child also takes CPU away from the broker (real
// devices bring their own CPUs): `broker_cpu_s` (this process, bcrypt workers included) says
// how much of the phase the broker itself needed.
//
// Scenarios:
//  warm_storm  BENCH_DEVICES (1000) users in SQLite, all with one bcrypt cost-12 hash, each its own
//              TOTP secret. Warm-up: every device logs in once (8 at a time; bcrypt-bound, ~0.3 s
//              per login per worker: minutes; reported as warm_up_s) and disconnects, which fills
//              auth.credentialCache. Storm: all devices connect AT ONCE with the next step's code
//              (window 1 accepts it now, and nobody claimed it). Reports admitted, refusals by
//              CONNACK reason code, time until all were admitted, p50/p99 login latency, and the
//              bastion_password_checks_total deltas (bcrypt_checks must be 0: every password was
//              cached). Target (issue): all 1000 admitted within 3 s on this 2-core machine.
//              BENCH_CPU_PROFILE=file.cpuprofile: one more storm (next step's codes) with the
//              broker's main thread profiled; the line gets its top 10 self-time functions.
//  cold_storm  The same storm against a fresh broker (empty cache), BENCH_COLD_DEVICES (300)
//              devices: bcrypt-bound. What matters: the login queue keeps answering (0x89 "server
//              busy" past auth.loginQueue.maxWaiting = 100, as shipped) instead of hanging, and no
//              admitted login waited past its code's life (max_wait_vs_code_life_s < 0).
//  store_size  Login rate with 100 vs BENCH_BIG_STORE (100 000) users in SQLite: two brokers up at
//              once, bcrypt cost 4, auth.credentialCache.ttl 0 (every login hashes, finds and
//              claims). After 100 unmeasured attempts per broker (valid code, wrong password:
//              TLS, lookup and bcrypt workers warmed, no step claimed), interleaved repetitions
//              (BENCH_STORE_REPS, 8 per size, ABBA order). Each measurement: 100 logins (connect
//              -> CONNACK -> DISCONNECT), 16 at a time, every login a distinct user with a valid
//              unclaimed code. 100 because the small store has 100 users: before each repetition
//              the bench clears their claimed steps (UPDATE users SET last_step = NULL through its
//              own SQLite connection) so they log in again with the current step, instead of
//              waiting 30 s for the clock's next one. Also reports the store alone (find,
//              claimStep: microseconds per call). Target: big >= 0.8 x small logins/s.
//  bogus       Broker CPU per wrong-code attempt: BENCH_BOGUS (2000) attempts, 32 at a time, half
//              random unknown names, half real users with wrong codes (never one valid in the run's
//              window), random passwords. auth.lockout is OFF here (otherwise the per-user and
//              per-address lockout would answer most attempts even earlier, and measure itself).
//              Broker CPU = this process's process.cpuUsage() delta (TLS handshake included); the
//              reference is one bcryptjs cost-12 compareSync on the main thread. bcrypt_checks
//              must be 0.
// The lockout is off in every scenario (storms from one address would trip the per-address
// limit); limits.maxConnectionsPerIp is 0, limits.maxConnections above the fleet. Storm lines
// also carry admitted_per_s (logins admitted in each second) and listen_overflows (Linux's
// machine-wide count of connections dropped on a full listen queue meanwhile: Node listens with
// a backlog of 511, so 1000 connects at once can wait for SYN retries at 1, 3, 7 s).
// Bounded: the warm-up phase 1200 s (BENCH_WARM_CAP_S: on a busy machine 1000 cost-12 logins
// take that long; a capped warm-up goes on to the storm, whose bcrypt_checks then count the
// devices not warmed), every other phase 300 s (BENCH_CAP_S); on a cap the line says what had
// happened by then. Connections only to and from 127.0.0.0/8. Files live in a folder under
// os.tmpdir() removed at the end.
import { fork } from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import tls from 'node:tls'

const PASSWORD = 'bench-password'
const env = (name, dflt) => Number(process.env[name] ?? dflt)
const CAP_MS = env('BENCH_CAP_S', 300) * 1000
const WARM_CAP_MS = env('BENCH_WARM_CAP_S', 1200) * 1000
const PERIOD_MS = 30_000

// ---------------------------------------------------------------------------------------------
// The load generator (child process). One message per run: { jobs, concurrency, capMs, hold }.
// A job is { u: username } or { user, secret, offset } (the code computed when the login starts),
// plus p (password) and id (client id). concurrency 0: all at once. Every client connects from
// 127.0.0.1 (the broker's per-address limits are off in this bench).
async function generator () {
  const { default: mqttPacket } = await import('mqtt-packet')
  const { codeForStep, stepAt } = await import('../dist/crypto/totp.js')
  let port
  // One context for every client: building one per connection (parsing the CA each time) would
  // be generator work in the measured time. Sessions are not resumed: every login is a full
  // handshake, as for a device that keeps no TLS session across its minute-long sleep.
  let secureContext
  const disconnect = mqttPacket.generate({ cmd: 'disconnect', reasonCode: 0 }, { protocolVersion: 5 })

  function login (job, t0, hold, pending) {
    return new Promise((resolve) => {
      const start = performance.now()
      const username = job.u ?? `${job.user}|${codeForStep(job.secret, stepAt() + job.offset)}`
      let done = false
      const sock = tls.connect({ host: '127.0.0.1', port, secureContext, servername: 'localhost' })
      const parser = mqttPacket.parser({ protocolVersion: 5 })
      const finish = (r) => {
        if (done) return
        done = true
        pending.delete(entry)
        const end = performance.now()
        resolve({ r, start: start - t0, end: end - t0 })
        if (r === 0 && hold) held.push(sock)
        else if (r === 0) sock.end(disconnect)
        else sock.destroy()
      }
      const entry = { finish }
      pending.add(entry)
      sock.once('secureConnect', () => {
        sock.write(mqttPacket.generate({
          cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: job.id, keepalive: 60,
          username, password: Buffer.from(job.p), properties: {}
        }, { protocolVersion: 5 }))
      })
      sock.on('data', (d) => parser.parse(d))
      parser.on('packet', (p) => { if (p.cmd === 'connack') finish(p.reasonCode ?? p.returnCode) })
      parser.on('error', (err) => finish(`parse:${err.message}`))
      sock.on('error', (err) => finish(`error:${err.code ?? err.message}`))
      sock.on('close', () => finish('closed'))
    })
  }

  let held = []
  process.on('message', async (msg) => {
    if (msg.op === 'exit') process.exit(0)
    port = msg.port
    secureContext = tls.createSecureContext({ ca: msg.ca })
    held = []
    const { jobs, concurrency, capMs, hold } = msg
    const pending = new Set()
    const cpu0 = process.cpuUsage()
    const elu0 = performance.eventLoopUtilization()
    const t0 = performance.now()
    const results = new Array(jobs.length)
    let capped = false
    const cap = setTimeout(() => {
      capped = true
      for (const p of [...pending]) p.finish('timeout')
    }, capMs)
    if (concurrency === 0) {
      // The storm: every connect starts in this tick.
      await Promise.all(jobs.map(async (job, i) => { results[i] = await login(job, t0, hold, pending) }))
    } else {
      let next = 0
      const lane = async () => {
        while (next < jobs.length && !capped) {
          const i = next++
          results[i] = await login(jobs[i], t0, hold, pending)
        }
      }
      await Promise.all(Array.from({ length: Math.min(concurrency, jobs.length) }, lane))
    }
    clearTimeout(cap)
    const wallMs = performance.now() - t0
    const cpu = process.cpuUsage(cpu0)
    const elu = performance.eventLoopUtilization(elu0)
    // Every login has its answer: the broker side stops its clock and profiler here.
    process.send({ answered: true })
    // Disconnect what the run kept open, and wait for the sockets to close (at most 5 s).
    await Promise.race([
      Promise.all(held.map((s) => new Promise((resolve) => { s.once('close', resolve); s.end(disconnect) }))),
      new Promise((resolve) => setTimeout(resolve, 5000))
    ])
    for (const s of held) s.destroy()
    process.send({
      results: Array.from(results, (x) => x ?? { r: 'not_started' }), // a capped run leaves holes
      capped,
      generator: { cpu_s: +((cpu.user + cpu.system) / 1e6).toFixed(2), wall_s: +(wallMs / 1000).toFixed(2), elu: +elu.utilization.toFixed(2) }
    })
  })
  process.send({ ready: true })
}

// ---------------------------------------------------------------------------------------------
// The broker side (this process).
let dist
async function loadDist () {
  const { createBastion, createStore } = await import('../dist/bastion.js')
  const { parseConfig } = await import('../dist/config/schema.js')
  const { initCertificates } = await import('../dist/certs/issue.js')
  const { codeForStep, newSecret, stepAt, verifyCode } = await import('../dist/crypto/totp.js')
  const { default: bcrypt } = await import('bcryptjs')
  const { pino } = await import('pino')
  dist = { createBastion, createStore, parseConfig, initCertificates, codeForStep, newSecret, stepAt, verifyCode, bcrypt, silent: pino({ level: 'silent' }) }
}

/**
 * Linux's count of connections the kernel dropped because a listen queue was full (machine-wide:
 * other processes' listeners count too); undefined elsewhere. Node listens with a backlog of 511.
 */
function listenOverflows () {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n')
    const i = lines.findIndex((l) => l.startsWith('TcpExt:'))
    const names = lines[i].split(/\s+/)
    const values = lines[i + 1].split(/\s+/)
    return Number(values[names.indexOf('ListenOverflows')])
  } catch {
    return undefined
  }
}

const progress = (...a) => process.stderr.write(`[login-fleet ${new Date().toISOString().slice(11, 19)}] ${a.join(' ')}\n`)

function pct (xs, p) {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? null : +s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))].toFixed(1)
}

/** CONNACK reason codes as hex (0x86 bad credentials, 0x89 busy, ...), other outcomes by name. */
function outcomes (results) {
  const refused = {}
  let admitted = 0
  for (const { r } of results) {
    if (r === 0) { admitted++; continue }
    const k = typeof r === 'number' ? `0x${r.toString(16)}` : r
    refused[k] = (refused[k] ?? 0) + 1
  }
  return { admitted, refused }
}

function brokerConfig (dir, storePath, auth = {}, limits = {}) {
  return dist.parseConfig({
    listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }],
    auth: {
      store: { type: 'sqlite', path: storePath },
      lockout: { maxFailuresPerUser: 0, maxFailuresPerIp: 0 },
      ...auth
    },
    limits: { maxConnectionsPerIp: 0, maxConnections: 200_000, ...limits },
    monitoring: { enabled: true, host: '127.0.0.1', port: 0 },
    log: { level: 'silent' }
  }, dir)
}

/** Users `${prefix}${i}` with one shared hash and their own secrets, added in one transaction. */
async function seedUsers (config, count, hash, prefix) {
  const secrets = []
  const records = []
  const createdAt = new Date().toISOString()
  for (let i = 0; i < count; i++) {
    secrets.push(dist.newSecret())
    records.push({ username: `${prefix}${i}`, passwordHash: hash, totpSecret: secrets[i], enabled: true, createdAt })
  }
  const store = dist.createStore(config, dist.silent)
  if (typeof store.addMany === 'function') await store.addMany(records)
  else for (const r of records) await store.add(r)
  await store.close()
  return secrets
}

async function scrape (bastion) {
  const text = await (await fetch(`http://127.0.0.1:${bastion.monitoring.port}/metrics`)).text()
  const num = (re) => { const m = text.match(re); return m === null ? 0 : Number(m[1]) }
  const logins = {}
  for (const m of text.matchAll(/^bastion_logins_total\{([^}]*)\} (\S+)$/gm)) logins[m[1].replace(/"/g, '')] = Number(m[2])
  return {
    hash: num(/^bastion_password_checks_total\{by="hash"\} (\S+)$/m),
    cache: num(/^bastion_password_checks_total\{by="cache"\} (\S+)$/m),
    logins
  }
}

function metricsDelta (a, b) {
  const logins = {}
  for (const k of Object.keys(b.logins)) {
    const d = b.logins[k] - (a.logins[k] ?? 0)
    if (d !== 0) logins[k] = d
  }
  return { bcrypt_checks: b.hash - a.hash, cache_hits: b.cache - a.cache, logins_total: logins }
}

/** A forked generator, driven one run at a time; killed if a run outlives its cap by 30 s. */
async function startGenerator () {
  // execArgv []: a --cpu-prof of the bench must not profile the clients too.
  const child = fork(new URL(import.meta.url), [], { env: { ...process.env, LOGIN_FLEET_ROLE: 'generator' }, execArgv: [], stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  await new Promise((resolve, reject) => {
    child.once('message', resolve)
    child.once('exit', (code) => reject(new Error(`load generator exited (${code})`)))
  })
  return {
    /** One run; `onAnswered` is awaited when every login has its answer (before held clients disconnect). */
    async run (port, ca, jobs, { concurrency, capMs, hold = false, onAnswered }) {
      let timer
      let onMessage
      const finished = new Promise((resolve) => {
        onMessage = (m) => {
          if (m.answered === true) onAnswered?.()
          else resolve(m)
        }
        child.on('message', onMessage)
      })
      child.send({ port, ca: ca.toString(), jobs, concurrency, capMs, hold })
      const answer = await Promise.race([finished, new Promise((resolve) => { timer = setTimeout(() => resolve(undefined), capMs + 30_000) })])
      clearTimeout(timer)
      child.off('message', onMessage)
      if (answer === undefined) {
        child.kill('SIGKILL')
        throw new Error(`load generator did not answer within ${(capMs + 30_000) / 1000} s`)
      }
      return answer
    },
    stop () { if (child.connected) child.send({ op: 'exit' }); else child.kill() }
  }
}

/**
 * Sends one run to the generator and measures this process's CPU (the broker's, its bcrypt
 * workers included) until every login has its answer; with `profile`, the broker's main thread
 * is profiled over the same span.
 */
async function drive (gen, port, ca, jobs, opts, profile) {
  const prof = profile === undefined ? undefined : await startProfile()
  let stopped
  const overflows0 = listenOverflows()
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  let cpuAnswered
  const answer = await gen.run(port, ca, jobs, {
    ...opts,
    onAnswered: () => {
      cpuAnswered = process.cpuUsage(cpu0)
      stopped = prof?.stop(profile)
    }
  })
  const cpu = cpuAnswered ?? process.cpuUsage(cpu0)
  const top = await (stopped ?? prof?.stop(profile))
  const overflows = overflows0 === undefined ? undefined : listenOverflows() - overflows0
  return { ...answer, wall_s: (performance.now() - t0) / 1000, broker_cpu_ms: (cpu.user + cpu.system) / 1000, overflows, ...(top === undefined ? {} : { top }) }
}

const PROFILE_INTERVAL_US = 200

/** The broker's main thread under the V8 sampling profiler; stop(file) writes it and ranks self times. */
async function startProfile () {
  const { Session } = await import('node:inspector/promises')
  const session = new Session()
  session.connect()
  await session.post('Profiler.enable')
  await session.post('Profiler.setSamplingInterval', { interval: PROFILE_INTERVAL_US })
  await session.post('Profiler.start')
  return {
    async stop (file) {
      const { profile } = await session.post('Profiler.stop')
      session.disconnect()
      writeFileSync(file, JSON.stringify(profile))
      progress(`cpu profile written to ${file}`)
      return topSelf(profile, 10, PROFILE_INTERVAL_US)
    }
  }
}

function stormFields (answer, n) {
  const { admitted, refused } = outcomes(answer.results)
  const ok = answer.results.filter((x) => x.r === 0).map((x) => x.end)
  const answered = answer.results.filter((x) => x.r !== 'timeout' && x.r !== 'not_started').map((x) => x.end)
  return {
    devices: n,
    admitted,
    refused,
    capped: answer.capped,
    all_admitted_s: admitted === n ? +(Math.max(...ok) / 1000).toFixed(2) : null,
    all_answered_s: answered.length === n ? +(Math.max(...answered) / 1000).toFixed(2) : null,
    login_ms: { p50: pct(ok, 50), p99: pct(ok, 99), max: pct(ok, 100) },
    // Admitted per second of the storm ([0-1 s, 1-2 s, ...]): steps at 1, 3, 7 s are SYN retries.
    admitted_per_s: perSecond(ok),
    // Machine-wide kernel count of connections dropped on a full listen queue during the storm.
    listen_overflows: answer.overflows,
    broker_cpu_s: +(answer.broker_cpu_ms / 1000).toFixed(2),
    generator: answer.generator
  }
}

function perSecond (ms) {
  const out = []
  for (const t of ms) {
    const i = Math.floor(t / 1000)
    while (out.length <= i) out.push(0)
    out[i]++
  }
  return out
}

/**
 * Self time per function (name, file, line) of a V8 CPU profile, biggest first, counted in
 * samples x the sampling interval: a gap between two samples far longer than the interval is time
 * the process was not running (a loaded machine), which time deltas would pin on whatever function
 * happened to be on the stack; it is reported apart as `unsampled_ms`. (idle) is left out of the
 * ranking (`idle_pct`); note that Node counts native work done while polling, such as TLS
 * handshakes run before any JavaScript callback, as idle.
 */
function topSelf (profile, n, intervalUs) {
  const byId = new Map(profile.nodes.map((nd) => [nd.id, nd]))
  const self = new Map()
  let idle = 0
  for (const id of profile.samples) {
    const cf = byId.get(id).callFrame
    if (cf.functionName === '(idle)') { idle++; continue }
    const file = cf.url === '' ? '' : ` ${cf.url.replace(/^file:\/\//, '').split('/').slice(-2).join('/')}:${cf.lineNumber + 1}`
    const key = `${cf.functionName === '' ? '(anonymous)' : cf.functionName}${file}`
    self.set(key, (self.get(key) ?? 0) + 1)
  }
  const total = profile.samples.length
  const ms = (count) => +(count * intervalUs / 1000).toFixed(1)
  const top = [...self].sort((a, b) => b[1] - a[1]).slice(0, n).map(([fn, count]) => ({ fn, self_ms: ms(count), pct: +(100 * count / total).toFixed(1) }))
  const wallMs = (profile.endTime - profile.startTime) / 1000
  return { sampled_ms: ms(total), unsampled_ms: +Math.max(0, wallMs - total * intervalUs / 1000).toFixed(0), idle_pct: +(100 * idle / total).toFixed(1), top }
}

// ---------------------------------------------------------------------------------------------
/** A broker with N users (one cost-12 hash, each its own secret) in its own folder, and a generator. */
async function stormBroker (root, name, N) {
  const dir = join(root, name)
  mkdirSync(dir)
  await dist.initCertificates({ outDir: join(dir, 'certs') })
  const config = brokerConfig(dir, 'data/users.db')
  progress(`${name}_storm: hashing (cost 12) and adding ${N} users`)
  const secrets = await seedUsers(config, N, dist.bcrypt.hashSync(PASSWORD, 12), 'dev')
  const bastion = await dist.createBastion(config)
  const gen = await startGenerator()
  return { config, secrets, bastion, gen, port: bastion.listeners[0].port, ca: readFileSync(join(dir, 'certs', 'ca.crt')) }
}

async function warmStorm (root) {
  const N = env('BENCH_DEVICES', 1000)
  const { secrets, bastion, gen, port, ca } = await stormBroker(root, 'warm', N)
  try {
    progress(`warm_storm: warm-up, ${N} logins 8 at a time (bcrypt-bound)`)
    const warm = await drive(gen, port, ca, secrets.map((secret, i) => ({ user: `dev${i}`, secret, offset: 0, p: PASSWORD, id: `dev${i}` })), { concurrency: 8, capMs: WARM_CAP_MS })
    const warmOut = outcomes(warm.results)
    progress(`warm_storm: warm-up took ${warm.wall_s.toFixed(1)} s: ${JSON.stringify(warmOut)}`)
    await new Promise((resolve) => setTimeout(resolve, 1000)) // let the disconnects settle
    const step = dist.stepAt() + 1
    const jobs = secrets.map((secret, i) => ({ u: `dev${i}|${dist.codeForStep(secret, step)}`, p: PASSWORD, id: `dev${i}` }))
    const before = await scrape(bastion)
    progress(`warm_storm: storm, ${N} logins at once`)
    const storm = await drive(gen, port, ca, jobs, { concurrency: 0, capMs: CAP_MS, hold: true })
    const after = await scrape(bastion)
    const fields = stormFields(storm, N)
    let profiled
    if (process.env.BENCH_CPU_PROFILE !== undefined) {
      // A second storm under the profiler, so the first one's numbers carry no profiler cost. Its
      // codes are for the step after `step`: usable once the clock has reached `step`.
      const wait = step * PERIOD_MS - Date.now() + 50
      progress(`warm_storm: profiled storm${wait > 0 ? ` in ${(wait / 1000).toFixed(0)} s (the next step's codes)` : ''}`)
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
      const next = dist.stepAt() + 1
      const again = secrets.map((secret, i) => ({ u: `dev${i}|${dist.codeForStep(secret, next)}`, p: PASSWORD, id: `dev${i}` }))
      const b2 = await scrape(bastion)
      const p2 = await drive(gen, port, ca, again, { concurrency: 0, capMs: CAP_MS, hold: true }, process.env.BENCH_CPU_PROFILE)
      const { admitted: a2, all_admitted_s: s2, login_ms: l2, broker_cpu_s: c2 } = stormFields(p2, N)
      profiled = { admitted: a2, all_admitted_s: s2, login_ms: l2, broker_cpu_s: c2, ...metricsDelta(b2, await scrape(bastion)), cpu_profile: p2.top }
    }
    return {
      scenario: 'warm_storm',
      warm_up_s: +warm.wall_s.toFixed(1),
      warm_up: { admitted: warmOut.admitted, refused: warmOut.refused, capped: warm.capped },
      ...fields,
      ...metricsDelta(before, after),
      target: { all_admitted_within_s: 3, met: fields.all_admitted_s !== null && fields.all_admitted_s <= 3 },
      ...(profiled === undefined ? {} : { profiled_storm: profiled })
    }
  } finally {
    gen.stop()
    await bastion.close()
  }
}

async function coldStorm (root) {
  const N = env('BENCH_COLD_DEVICES', 300)
  const { config, secrets, bastion, gen, port, ca } = await stormBroker(root, 'cold', N)
  try {
    const step = dist.stepAt() + 1
    // The code of `step` stops being accepted when the clock passes step + window (1).
    const codeEndsMs = (step + 2) * PERIOD_MS
    const jobs = secrets.map((secret, i) => ({ u: `dev${i}|${dist.codeForStep(secret, step)}`, p: PASSWORD, id: `dev${i}` }))
    const before = await scrape(bastion)
    const wallStart = Date.now()
    progress(`cold_storm: storm, ${N} logins at once against an empty cache`)
    const storm = await drive(gen, port, ca, jobs, { concurrency: 0, capMs: CAP_MS, hold: true })
    const after = await scrape(bastion)
    const fields = stormFields(storm, N)
    const answers = (r) => storm.results.filter((x) => x.r === r).map((x) => x.end)
    const busy = answers(0x89)
    const ok = answers(0)
    return {
      scenario: 'cold_storm',
      ...fields,
      busy_answer_ms: { p50: pct(busy, 50), max: pct(busy, 100) },
      // Negative: the last admitted login finished that many seconds before its code expired.
      max_wait_vs_code_life_s: ok.length === 0 ? null : +((wallStart + Math.max(...ok) - codeEndsMs) / 1000).toFixed(1),
      hung: (fields.refused.timeout ?? 0) + (fields.refused.not_started ?? 0),
      login_queue: config.auth.loginQueue,
      workers: config.auth.workers,
      ...metricsDelta(before, after)
    }
  } finally {
    gen.stop()
    await bastion.close()
  }
}

async function storeSize (root) {
  const BIG = env('BENCH_BIG_STORE', 100_000)
  const SMALL = 100
  const REPS = env('BENCH_STORE_REPS', 8)
  const K = SMALL
  const dir = join(root, 'size')
  mkdirSync(dir)
  await dist.initCertificates({ outDir: join(dir, 'certs') })
  const auth = { credentialCache: { ttl: 0 } }
  const hash = dist.bcrypt.hashSync(PASSWORD, 4)
  const sizes = {}
  for (const [name, count] of [['small', SMALL], ['big', BIG]]) {
    const config = brokerConfig(dir, `data/${name}.db`, auth)
    const t0 = performance.now()
    const secrets = await seedUsers(config, count, hash, 'u')
    progress(`store_size: ${count} users added in ${((performance.now() - t0) / 1000).toFixed(1)} s (one addMany)`)
    sizes[name] = { count, config, secrets, rates: [] }
  }
  // The store alone, before any broker opens the files: 2000 finds and 2000 claimSteps, random
  // users (the small store's 100 each come back 20 times, with steps 1, 2, ... 20: long past, never
  // a real login's), median of 5 batches of 400 (a GC pause or a neighbour's burst hits one batch).
  for (const s of Object.values(sizes)) {
    const store = dist.createStore(s.config, dist.silent)
    await store.find('u0')
    const n = 2000
    const order = s.count >= n ? sample(s.count, n) : Array.from({ length: n }, (_, j) => j % s.count)
    const batches = { find: [], claimStep: [] }
    for (let b = 0; b < n; b += 400) {
      const part = order.slice(b, b + 400)
      const t0 = performance.now()
      for (const i of part) await store.find(`u${i}`)
      const t1 = performance.now()
      for (let j = 0; j < part.length; j++) await store.claimStep(`u${part[j]}`, 1 + Math.floor((b + j) / s.count))
      const t2 = performance.now()
      batches.find.push((t1 - t0) * 1000 / part.length)
      batches.claimStep.push((t2 - t1) * 1000 / part.length)
    }
    await store.close()
    s.store_us = { find: pct(batches.find, 50), claimStep: pct(batches.claimStep, 50) }
  }
  const small = sizes.small
  const big = sizes.big
  small.bastion = await dist.createBastion(small.config)
  big.bastion = await dist.createBastion(big.config)
  const gen = await startGenerator()
  const bigOrder = sample(BIG, Math.min(BIG, K * (REPS + 1)))
  const ca = readFileSync(join(dir, 'certs', 'ca.crt'))
  const { default: Database } = await import('better-sqlite3')
  const side = new Database(small.config.auth.store.path, { timeout: 2000 })
  const resetSmall = side.prepare('UPDATE users SET last_step = NULL')
  try {
    // Warm-up, unmeasured, K attempts per broker: a valid code with a wrong password takes the
    // whole path up to bcrypt (each broker's own worker threads) and claims no step.
    for (const s of [small, big]) {
      const step = dist.stepAt()
      const users = s === small ? Array.from({ length: SMALL }, (_, i) => i) : bigOrder.slice(REPS * K)
      await drive(gen, s.bastion.listeners[0].port, ca, users.map((i) => ({ u: `u${i}|${dist.codeForStep(s.secrets[i], step)}`, p: 'not-the-password', id: `w-${i}` })), { concurrency: 16, capMs: CAP_MS })
    }
    for (let rep = 0; rep < REPS; rep++) {
      // The small store's 100 users log in again in every repetition with the current step: the
      // bench clears their claimed steps first (one UPDATE through a second SQLite connection, as
      // the CLI writes beside a running broker; the store keeps no cache), or each repetition would
      // wait for the clock's step to turn. No login is in flight meanwhile.
      const smallStep = dist.stepAt()
      resetSmall.run()
      // small, big, then big, small, ...: a drift in the machine's load hits both sizes alike.
      for (const s of rep % 2 === 0 ? [small, big] : [big, small]) {
        let jobs
        if (s === small) {
          jobs = s.secrets.map((secret, i) => ({ u: `u${i}|${dist.codeForStep(secret, smallStep)}`, p: PASSWORD, id: `s${rep}-${i}` }))
        } else {
          const step = dist.stepAt()
          jobs = bigOrder.slice(rep * K, (rep + 1) * K).map((i) => ({ u: `u${i}|${dist.codeForStep(s.secrets[i], step)}`, p: PASSWORD, id: `b${rep}-${i}` }))
        }
        const a = await drive(gen, s.bastion.listeners[0].port, ca, jobs, { concurrency: 16, capMs: CAP_MS })
        const { admitted, refused } = outcomes(a.results)
        const secs = Math.max(...a.results.map((x) => x.end ?? 0)) / 1000
        s.rates.push({ logins_per_s: +(admitted / secs).toFixed(1), admitted, refused, s: +secs.toFixed(2), generator_elu: a.generator.elu, broker_cpu_s: +(a.broker_cpu_ms / 1000).toFixed(2) })
        progress(`store_size: rep ${rep + 1} ${s === small ? 'small' : 'big'}: ${(admitted / secs).toFixed(1)} logins/s ${JSON.stringify(refused)}`)
      }
    }
  } finally {
    side.close()
    gen.stop()
    await small.bastion.close()
    await big.bastion.close()
  }
  const agg = (s) => {
    const ok = s.rates.reduce((n, r) => n + r.admitted, 0)
    const secs = s.rates.reduce((n, r) => n + r.s, 0)
    return +(ok / secs).toFixed(1)
  }
  const ratio = +(agg(big) / agg(small)).toFixed(2)
  const view = (s) => ({ users: s.count, logins_per_s: agg(s), reps: s.rates, store_us: s.store_us })
  return {
    scenario: 'store_size',
    logins_per_measurement: K,
    concurrency: 16,
    bcrypt_cost: 4,
    credential_cache: 'off',
    small: view(small),
    big: view(big),
    ratio_big_to_small: ratio,
    target: { ratio_at_least: 0.8, met: ratio >= 0.8 }
  }
}

/** `n` distinct integers from [0, count), in random order. */
function sample (count, n) {
  const a = Array.from({ length: count }, (_, i) => i)
  for (let i = 0; i < n; i++) {
    const j = i + randomInt(count - i)
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a.slice(0, n)
}

async function bogus (root) {
  const M = env('BENCH_BOGUS', 2000)
  const CONC = env('BENCH_BOGUS_CONCURRENCY', 32) // 0: all at once
  const REAL = 100
  const dir = join(root, 'bogus')
  mkdirSync(dir)
  await dist.initCertificates({ outDir: join(dir, 'certs') })
  const config = brokerConfig(dir, 'data/users.db')
  const secrets = await seedUsers(config, REAL, dist.bcrypt.hashSync(PASSWORD, 12), 'dev')
  const bastion = await dist.createBastion(config)
  const gen = await startGenerator()
  try {
    const port = bastion.listeners[0].port
    const ca = readFileSync(join(dir, 'certs', 'ca.crt'))
    const now = Date.now()
    const jobs = []
    for (let i = 0; i < M; i++) {
      const real = i % 2 === 1
      const idx = randomInt(REAL)
      let code
      do code = String(randomInt(1_000_000)).padStart(6, '0')
      // A real user's random code must not be valid anywhere in the run (window 1, a few minutes).
      while (real && [-1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10].some((k) => dist.verifyCode(secrets[idx], code, 1, now + k * PERIOD_MS) !== undefined))
      const user = real ? `dev${idx}` : `x${randomBytes(6).toString('hex')}`
      jobs.push({ u: `${user}|${code}`, p: randomBytes(9).toString('base64'), id: `bogus${i}` })
    }
    // The broker idle for a second: what it burns without any login (prom-client, timers).
    const idle0 = process.cpuUsage()
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const idle = process.cpuUsage(idle0)
    const before = await scrape(bastion)
    progress(`bogus: ${M} wrong-code attempts, ${CONC === 0 ? 'all at once' : `${CONC} at a time`}`)
    const a = await drive(gen, port, ca, jobs, { concurrency: CONC, capMs: CAP_MS })
    const after = await scrape(bastion)
    const { admitted, refused } = outcomes(a.results)
    // Reference: one bcrypt cost-12 verify on this thread, CPU time, median of 3.
    const hash = dist.bcrypt.hashSync(PASSWORD, 12)
    const bc = []
    for (let i = 0; i < 3; i++) {
      const c0 = process.cpuUsage()
      dist.bcrypt.compareSync(PASSWORD, hash)
      const c = process.cpuUsage(c0)
      bc.push((c.user + c.system) / 1000)
    }
    const bcryptMs = pct(bc, 50)
    const perAttempt = a.broker_cpu_ms / M
    return {
      scenario: 'bogus',
      attempts: M,
      concurrency: CONC,
      lockout: 'off',
      admitted,
      refused,
      capped: a.capped,
      seconds: +a.wall_s.toFixed(2),
      attempts_per_s: +(M / a.wall_s).toFixed(1),
      cpu_ms_per_attempt: +perAttempt.toFixed(3),
      broker_idle_cpu_ms_per_s: +((idle.user + idle.system) / 1000).toFixed(1),
      bcrypt12_cpu_ms: bcryptMs,
      ratio_to_bcrypt: +(perAttempt / bcryptMs).toFixed(4),
      answered_per_s: perSecond(a.results.map((x) => x.end ?? 0)),
      listen_overflows: a.overflows,
      generator: a.generator,
      ...metricsDelta(before, after)
    }
  } finally {
    gen.stop()
    await bastion.close()
  }
}

async function main () {
  const SCENARIOS = { warm_storm: warmStorm, cold_storm: coldStorm, store_size: storeSize, bogus }
  const names = (process.env.BENCH_SCENARIOS ?? Object.keys(SCENARIOS).join(',')).split(',').filter((n) => n !== '')
  for (const n of names) {
    if (SCENARIOS[n] === undefined) throw new Error(`BENCH_SCENARIOS: unknown scenario ${n} (one of ${Object.keys(SCENARIOS).join(', ')})`)
  }
  await loadDist()
  const root = mkdtempSync(join(tmpdir(), 'bastion-fleet-'))
  const cleanup = () => rmSync(root, { recursive: true, force: true })
  process.once('SIGINT', () => { cleanup(); process.exit(130) })
  const started = performance.now()
  let failed = false
  try {
    for (const n of names) {
      const t0 = performance.now()
      const machine = { cpus: availableParallelism(), node: process.version, load_1m: +loadavg()[0].toFixed(2) }
      let line
      try {
        line = await SCENARIOS[n](root)
      } catch (err) {
        failed = true
        line = { scenario: n, error: err.stack ?? String(err) }
      }
      console.log(JSON.stringify({ ...line, machine, scenario_s: +((performance.now() - t0) / 1000).toFixed(1) }))
    }
  } finally {
    cleanup()
  }
  progress(`done in ${((performance.now() - started) / 1000).toFixed(0)} s`)
  // Worker threads and timers of closed brokers must not keep the bench alive.
  process.exit(failed ? 1 : 0)
}

// Last, so that every module-level binding above is initialised first.
if (process.env.LOGIN_FLEET_ROLE === 'generator') await generator()
else await main()
