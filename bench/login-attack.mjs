// Login under attack: do real devices keep logging in while many addresses flood the broker with
// wrong credentials? The broker runs in this process (built from dist/, default config but for
// the listener: SQLite store, lockout and login queue as shipped, bcrypt cost 12); the devices
// and the attackers run in two forked children, so their TLS work is not the broker's.
//
//  - Devices: BENCH_DEVICES (30) accounts, each logging in (CONNECT with user|code, password)
//    once per BENCH_DEVICE_PERIOD_S (60) s, staggered: one login every 2 s in all, each with the
//    current code (never reused: a device logs in once a minute, two steps apart). They log in
//    once before the attack (so the broker knows them, as a running fleet is known).
//  - Attackers: BENCH_ATTACKERS (60) loopback addresses (127.0.0.2 ...), each with
//    BENCH_ATTACKER_CONCURRENCY (4) connections in flight at all times, for BENCH_ATTACK_S (60) s:
//    random user names (and the devices' names) with random codes and passwords. Raw tls.connect
//    + one CONNECT packet, a new connection as soon as the last one ended.
// One JSON line per phase (`baseline`: devices alone; `attack`): device logins, how many were
// accepted within 2 s (target: >= 95 % under attack), p50/p99/max login time, refusals by CONNACK
// code, the attackers' attempts and how they ended, the broker's CPU seconds and event-loop
// delay, the generators' CPU seconds (on a 2-core machine they compete with the broker: real
// attackers and devices bring their own CPUs).
import { fork } from 'node:child_process'
import { randomBytes, randomInt } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import tls from 'node:tls'
import mqttPacket from 'mqtt-packet'

const env = (name, dflt) => Number(process.env[name] ?? dflt)
const DEVICES = env('BENCH_DEVICES', 30)
const PERIOD_S = env('BENCH_DEVICE_PERIOD_S', 60)
const ATTACKERS = env('BENCH_ATTACKERS', 60)
const CONCURRENCY = env('BENCH_ATTACKER_CONCURRENCY', 4)
const ATTACK_S = env('BENCH_ATTACK_S', 60)
const BASELINE_S = env('BENCH_BASELINE_S', 10)
const PASSWORD = 'bench-device-password'

/** One CONNECT over a fresh TLS socket; resolves with the CONNACK code, or why there was none. */
function attempt ({ port, ca, username, password, clientId, localAddress }, timeoutMs = 30_000) {
  return new Promise((resolve) => {
    const t0 = performance.now()
    const parser = mqttPacket.parser({ protocolVersion: 5 })
    let done = false
    const s = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ...(localAddress === undefined ? {} : { localAddress }) })
    const finish = (r) => {
      if (done) return
      done = true
      clearTimeout(timer)
      s.destroy()
      resolve({ r, ms: performance.now() - t0 })
    }
    const timer = setTimeout(() => finish('timeout'), timeoutMs)
    parser.on('packet', (p) => { if (p.cmd === 'connack') finish(p.reasonCode ?? p.returnCode) })
    parser.on('error', () => finish('bad_packet'))
    s.on('secureConnect', () => {
      s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, keepalive: 30, clientId, username, password: Buffer.from(password) }))
    })
    s.on('data', (d) => parser.parse(d))
    s.on('error', () => {})
    s.on('close', () => finish('closed'))
  })
}

function stats (xs) {
  if (xs.length === 0) return { n: 0 }
  const s = [...xs].sort((a, b) => a - b)
  const at = (p) => +s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))].toFixed(1)
  return { p50: at(50), p99: at(99), max: at(100) }
}

const count = (xs) => xs.reduce((m, x) => { m[x] = (m[x] ?? 0) + 1; return m }, {})

if (process.env.BENCH_ROLE === 'devices') {
  process.once('message', async ({ port, ca, devices, seconds, start }) => {
    const { currentCode } = await import('../dist/crypto/totp.js')
    const results = []
    const t0 = Date.now()
    const gap = PERIOD_S * 1000 / devices.length
    const pending = []
    for (let i = start; Date.now() - t0 < seconds * 1000; i++) {
      const d = devices[i % devices.length]
      pending.push(attempt({ port, ca: Buffer.from(ca), username: `${d.user}|${currentCode(d.secret)}`, password: PASSWORD, clientId: `${d.user}-dev` }).then((x) => results.push(x)))
      await new Promise((resolve) => setTimeout(resolve, gap))
    }
    await Promise.all(pending)
    const cpu = process.cpuUsage()
    process.send({ results, next: start + results.length, cpu_s: (cpu.user + cpu.system) / 1e6 }, () => process.exit(0))
  })
} else if (process.env.BENCH_ROLE === 'attackers') {
  process.once('message', async ({ port, ca, names, seconds }) => {
    const until = Date.now() + seconds * 1000
    const outcomes = []
    const one = async (localAddress) => {
      while (Date.now() < until) {
        const name = Math.random() < 0.5 ? names[randomInt(names.length)] : `x${randomBytes(4).toString('hex')}`
        const code = String(randomInt(1_000_000)).padStart(6, '0')
        const r = await attempt({ port, ca: Buffer.from(ca), username: `${name}|${code}`, password: randomBytes(8).toString('hex'), clientId: `a${randomBytes(6).toString('hex')}`, localAddress }, 10_000)
        outcomes.push(r.r)
      }
    }
    const workers = []
    for (let a = 0; a < ATTACKERS; a++) for (let c = 0; c < CONCURRENCY; c++) workers.push(one(`127.0.0.${2 + a}`))
    await Promise.all(workers)
    const cpu = process.cpuUsage()
    process.send({ attempts: outcomes.length, outcomes: count(outcomes), cpu_s: (cpu.user + cpu.system) / 1e6 }, () => process.exit(0))
  })
} else {
  await main()
}

function child (role, message) {
  const c = fork(new URL(import.meta.url), [], { env: { ...process.env, BENCH_ROLE: role } })
  const answer = new Promise((resolve, reject) => {
    c.once('message', resolve)
    c.once('exit', (code) => reject(new Error(`${role} exited with ${code}`)))
  })
  c.send(message)
  return answer
}

async function main () {
  const { createBastion, createStore } = await import('../dist/bastion.js')
  const { parseConfig } = await import('../dist/config/schema.js')
  const { initCertificates } = await import('../dist/certs/issue.js')
  const { newSecret } = await import('../dist/crypto/totp.js')
  const { createPasswordPool } = await import('../dist/crypto/password-pool.js')
  const { pino } = await import('pino')
  const dir = mkdtempSync(join(tmpdir(), 'bastion-attack-'))
  try {
    await initCertificates({ outDir: join(dir, 'certs') })
    const config = parseConfig({
      listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }],
      limits: { maxConnections: 100_000 },
      log: { level: 'silent' }
    }, dir)
    const pool = createPasswordPool(1)
    const hash = await pool.hash(PASSWORD, 12)
    await pool.close()
    const devices = Array.from({ length: DEVICES }, (_, i) => ({ user: `device-${i}`, secret: newSecret() }))
    const store = createStore(config, pino({ level: 'silent' }))
    await store.addMany(devices.map((d) => ({ username: d.user, passwordHash: hash, totpSecret: d.secret, enabled: true, createdAt: new Date().toISOString() })))
    await store.close()
    const bastion = await createBastion(config, { logger: pino({ level: 'silent' }) })
    const port = bastion.listeners[0].port
    const ca = readFileSync(join(dir, 'certs', 'ca.crt')).toString()
    try {
      // A running fleet: every device logged in before, from where it is.
      const { currentCode } = await import('../dist/crypto/totp.js')
      for (let i = 0; i < devices.length; i += 4) {
        await Promise.all(devices.slice(i, i + 4).map((d) => attempt({ port, ca: Buffer.from(ca), username: `${d.user}|${currentCode(d.secret, Date.now() - 30_000)}`, password: PASSWORD, clientId: `${d.user}-dev` })))
      }
      // Devices take turns across phases: none logs in twice within a minute (a code works once).
      let next = 0
      for (const phase of ['baseline', 'attack']) {
        const seconds = phase === 'attack' ? ATTACK_S : BASELINE_S
        const loop = monitorEventLoopDelay({ resolution: 10 })
        loop.enable()
        const cpu0 = process.cpuUsage()
        const t0 = performance.now()
        const [dev, att] = await Promise.all([
          child('devices', { port, ca, devices, seconds, start: next }),
          phase === 'attack' ? child('attackers', { port, ca, names: devices.map((d) => d.user), seconds }) : undefined
        ])
        const cpu = process.cpuUsage(cpu0)
        loop.disable()
        next = dev.next
        const ms = dev.results.map((r) => r.ms)
        const ok = dev.results.filter((r) => r.r === 0)
        process.stdout.write(JSON.stringify({
          scenario: 'login_under_attack',
          phase,
          seconds: +((performance.now() - t0) / 1000).toFixed(1),
          attackers: phase === 'attack' ? ATTACKERS : 0,
          device_logins: dev.results.length,
          device_ok: ok.length,
          device_ok_within_2s: ok.filter((r) => r.ms <= 2000).length,
          within_2s_pct: +(100 * ok.filter((r) => r.ms <= 2000).length / Math.max(1, dev.results.length)).toFixed(1),
          device_ms: stats(ms),
          device_refusals: count(dev.results.filter((r) => r.r !== 0).map((r) => r.r)),
          ...(att === undefined ? {} : { attack_attempts: att.attempts, attack_outcomes: att.outcomes, attackers_cpu_s: +att.cpu_s.toFixed(1) }),
          broker_cpu_s: +((cpu.user + cpu.system) / 1e6).toFixed(1),
          broker_loop_delay_ms: { p50: +(loop.percentile(50) / 1e6).toFixed(1), p99: +(loop.percentile(99) / 1e6).toFixed(1), max: +(loop.max / 1e6).toFixed(1) },
          devices_cpu_s: +dev.cpu_s.toFixed(1)
        }) + '\n')
      }
    } finally {
      await bastion.close()
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
