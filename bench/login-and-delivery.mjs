// Measures, on this machine: login latency (TLS + bcrypt cost 12 in the worker pool + TOTP +
// replay claim, file store) and QoS 1 publish-to-delivery latency for a connected client.
// Bounded: LOGINS logins and MESSAGES messages, on 127.0.0.1 only. Prints one JSON object.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import mqtt from 'mqtt'
import { createBastion, parseConfig } from '../dist/index.js'
import { initCertificates } from '../dist/certs/issue.js'
import { currentCode, newSecret } from '../dist/crypto/totp.js'
import { createFileStore } from '../dist/stores/file.js'

const LOGINS = Number(process.env.BENCH_LOGINS ?? 20)
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 2000)

const dir = mkdtempSync(join(tmpdir(), 'bastion-bench-'))
await initCertificates({ outDir: join(dir, 'certs') })
const config = parseConfig({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }], log: { level: 'silent' } }, dir)
const store = createFileStore(config.auth.store.path)
const hash = bcrypt.hashSync('bench-password', 12) // the cost Python's bcrypt.gensalt() uses
const secrets = []
for (let i = 0; i < LOGINS; i++) {
  const secret = newSecret()
  secrets.push(secret)
  await store.add({ username: `dev${i}`, passwordHash: hash, totpSecret: secret, enabled: true, createdAt: new Date().toISOString() })
}
const bastion = await createBastion(config)
const port = bastion.listeners[0].port
const ca = readFileSync(join(dir, 'certs', 'ca.crt'))
const connect = (i) => mqtt.connectAsync({
  host: '127.0.0.1', port, protocol: 'mqtts', ca, servername: 'localhost', protocolVersion: 5, reconnectPeriod: 0,
  username: `dev${i}|${currentCode(secrets[i])}`, password: 'bench-password'
})
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return +s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))].toFixed(2) }

const logins = []
const clients = []
for (let i = 0; i < LOGINS; i++) {
  const t0 = performance.now()
  clients.push(await connect(i))
  logins.push(performance.now() - t0)
}

// dev0 publishes to its own branch and reads it back: the time from publish to delivery
// through the broker (ACL checks on publish and on forward included).
const sub = clients[0]
await sub.subscribeAsync('metrics/dev0/#', { qos: 1 })
const sent = new Map()
const delivery = []
const done = new Promise((resolve) => {
  sub.on('message', (_topic, payload) => {
    const t0 = sent.get(payload.toString())
    if (t0 !== undefined) delivery.push(performance.now() - t0)
    if (delivery.length === MESSAGES) resolve()
  })
})
for (let i = 0; i < MESSAGES; i++) {
  const id = String(i)
  sent.set(id, performance.now())
  await sub.publishAsync('metrics/dev0/Temperatura', id, { qos: 1 })
}
await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 30_000))])

const rss = process.memoryUsage().rss
for (const c of clients) await c.endAsync(true).catch(() => {})
await bastion.close()
rmSync(dir, { recursive: true, force: true })
console.log(JSON.stringify({
  machine: { cpus: (await import('node:os')).availableParallelism(), node: process.version },
  loginMs: { n: logins.length, p50: pct(logins, 50), p99: pct(logins, 99), max: pct(logins, 100) },
  qos1DeliveryMs: { n: delivery.length, p50: pct(delivery, 50), p99: pct(delivery, 99), max: pct(delivery, 100) },
  rssMiB: Math.round(rss / 1048576)
}, null, 2))
