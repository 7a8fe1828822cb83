// Measures, on this machine: login latency (TLS + bcrypt cost 12 in the worker pool + TOTP +
// replay claim) with the file store and with the MySQL store (a throwaway MariaDB on
// 127.0.0.1), and QoS 1 publish-to-delivery latency for a connected client.
// Bounded: LOGINS logins per store and MESSAGES messages. Prints one JSON object.
// Set BENCH_STORES=file to skip MariaDB.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import mqtt from 'mqtt'
import { pino } from 'pino'
import { createBastion, createStore } from '../dist/bastion.js'
import { parseConfig } from '../dist/config/schema.js'
import { initCertificates } from '../dist/certs/issue.js'
import { currentCode, newSecret } from '../dist/crypto/totp.js'
import { migrateTable } from '../dist/stores/mysql-schema.js'

const LOGINS = Number(process.env.BENCH_LOGINS ?? 20)
const MESSAGES = Number(process.env.BENCH_MESSAGES ?? 2000)
const STORES = (process.env.BENCH_STORES ?? 'file,mysql').split(',')
const hash = bcrypt.hashSync('bench-password', 12) // the cost Python's bcrypt.gensalt() uses
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return +s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))].toFixed(2) }
const stats = (xs) => ({ n: xs.length, p50: pct(xs, 50), p99: pct(xs, 99), max: pct(xs, 100) })

async function measure (store, withDelivery) {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-bench-'))
  await initCertificates({ outDir: join(dir, 'certs') })
  // One client sends the whole stream as fast as it can: past the default per-client publish rate.
  const config = parseConfig({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }], auth: { store }, limits: { publishRate: { messages: 1_000_000 } }, log: { level: 'silent' } }, dir)
  const users = createStore(config, pino({ level: 'silent' }))
  const secrets = []
  for (let i = 0; i < LOGINS; i++) {
    secrets.push(newSecret())
    await users.add({ username: `dev${i}`, passwordHash: hash, totpSecret: secrets[i], enabled: true, createdAt: new Date().toISOString() })
  }
  await users.close()
  const bastion = await createBastion(config)
  const ca = readFileSync(join(dir, 'certs', 'ca.crt'))
  const clients = []
  const logins = []
  for (let i = 0; i < LOGINS; i++) {
    const t0 = performance.now()
    clients.push(await mqtt.connectAsync({
      host: '127.0.0.1', port: bastion.listeners[0].port, protocol: 'mqtts', ca, servername: 'localhost', protocolVersion: 5,
      reconnectPeriod: 0, username: `dev${i}|${currentCode(secrets[i])}`, password: 'bench-password'
    }))
    logins.push(performance.now() - t0)
  }
  const result = { loginMs: stats(logins) }
  if (withDelivery) {
    // dev0 publishes to its own branch and reads it back: publish to delivery through the
    // broker, ACL checks on publish and on forward included.
    const c = clients[0]
    await c.subscribeAsync('metrics/dev0/#', { qos: 1 })
    const sent = new Map()
    const delivery = []
    const done = new Promise((resolve) => {
      c.on('message', (_topic, payload) => {
        const t0 = sent.get(payload.toString())
        if (t0 !== undefined) delivery.push(performance.now() - t0)
        if (delivery.length === MESSAGES) resolve()
      })
    })
    for (let i = 0; i < MESSAGES; i++) {
      sent.set(String(i), performance.now())
      await c.publishAsync('metrics/dev0/Temperatura', String(i), { qos: 1 })
    }
    await Promise.race([done, new Promise((resolve) => setTimeout(resolve, 30_000))])
    result.qos1DeliveryMs = stats(delivery)
    result.rssMiB = Math.round(process.memoryUsage().rss / 1048576)
  }
  for (const c of clients) await c.endAsync(true).catch(() => {})
  await bastion.close()
  rmSync(dir, { recursive: true, force: true })
  return result
}

const out = { machine: { cpus: availableParallelism(), node: process.version }, logins: LOGINS }
if (STORES.includes('file')) out.file = await measure({ type: 'file', path: 'data/users.json' }, true)
if (STORES.includes('mysql')) {
  const { startMariaDb } = await import('../test/helpers/mariadb.mjs')
  const db = await startMariaDb()
  try {
    const { url } = await db.createDatabase()
    const store = parseConfig({ auth: { store: { type: 'mysql', url } } }, process.cwd()).auth.store
    await migrateTable(store)
    out.mysql = await measure({ type: 'mysql', url }, false)
  } finally {
    await db.close()
  }
}
console.log(JSON.stringify(out, null, 2))
