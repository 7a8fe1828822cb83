// The packet writer alone: mqtt-packet's writeToStream (the vendored, patched copy aedes writes
// with) sending QoS 1 PUBLISH + PUBACK pairs, 16 of each per turn, into a TLS socket on
// 127.0.0.1, as the broker does under load. CPU per pair of this process (the writer, TLS both
// ways and the reading end), this build against another's (--baseline DIR: a checkout with
// dist/ built), alternating runs so the machine's drift hits both alike.
//   npm run build && node bench/compare/writer.mjs --baseline /tmp/main-build [--reps 5] [--pairs 300000]
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { connect, createServer } from 'node:tls'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const fail = (msg) => { console.error(`writer: ${msg}`); process.exit(2) }

let flags
try {
  flags = parseArgs({ options: { baseline: { type: 'string' }, reps: { type: 'string' }, pairs: { type: 'string' }, run: { type: 'string' }, cert: { type: 'string' } } }).values
} catch (err) { fail(err.message) }
const whole = (name, value, min) => {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be a whole number of at least ${min}, not "${value}"`)
  return n
}
const reps = whole('reps', flags.reps, 1) ?? 5
const pairs = whole('pairs', flags.pairs, 16) ?? 300_000

if (flags.run !== undefined) {
  // One measurement, in its own process: node writer.mjs --run <mqtt-packet dir> --cert <dir> --pairs N
  const mqtt = createRequire(join(flags.run, 'mqtt.js'))('./mqtt.js')
  const keys = { cert: readFileSync(join(flags.cert, 'server.crt')), key: readFileSync(join(flags.cert, 'server.key')) }
  const server = createServer(keys, (s) => { s.on('data', () => {}) })
  server.listen(0, '127.0.0.1', () => {
    const c = connect({ port: server.address().port, host: '127.0.0.1', ca: readFileSync(join(flags.cert, 'ca.crt')), servername: 'localhost' }, async () => {
      const payload = Buffer.alloc(64, 46)
      const opts = { protocolVersion: 4 }
      let id = 0
      const t0 = process.cpuUsage()
      for (let i = 0; i < pairs; i += 16) {
        for (let k = 0; k < 16; k++) {
          id = id === 65535 ? 1 : id + 1
          mqtt.writeToStream({ cmd: 'publish', topic: 'metrics/r1t0/Temperatura', payload, qos: 1, messageId: id, retain: false, dup: false }, c, opts)
          mqtt.writeToStream({ cmd: 'puback', messageId: id }, c, opts)
        }
        if (c.writableLength > 1 << 20) await new Promise((resolve) => c.once('drain', resolve))
        else await new Promise((resolve) => setImmediate(resolve))
      }
      const used = process.cpuUsage(t0)
      console.log(((used.user + used.system) / pairs).toFixed(2))
      process.exit(0)
    })
  })
} else {
  const subjects = [['this build', join(ROOT, 'dist', 'vendor', 'mqtt-packet')]]
  if (flags.baseline !== undefined) {
    const dir = join(flags.baseline, 'dist', 'vendor', 'mqtt-packet')
    if (!existsSync(join(dir, 'mqtt.js'))) fail(`--baseline ${flags.baseline}: no dist/vendor/mqtt-packet there (build it first)`)
    subjects.push([`baseline ${flags.baseline}`, dir])
  }
  if (!existsSync(join(subjects[0][1], 'mqtt.js'))) fail('no dist/vendor/mqtt-packet: run npm run build first')
  const certs = mkdtempSync(join(tmpdir(), 'bastion-writer-'))
  try {
    execFileSync(process.execPath, [join(ROOT, 'dist', 'cli', 'main.js'), 'certs', 'init', '--out', certs], { stdio: 'ignore' })
    const runs = new Map(subjects.map(([name]) => [name, []]))
    for (let r = 0; r < reps; r++) {
      for (const [name, dir] of r % 2 === 0 ? subjects : [...subjects].reverse()) {
        const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), '--run', dir, '--cert', certs, '--pairs', String(pairs)]).toString().trim()
        runs.get(name).push(Number(out))
      }
    }
    const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2 }
    for (const [name, xs] of runs) console.log(JSON.stringify({ bench: 'writer', subject: name, pairs, reps, us_per_pair: xs, median_us_per_pair: median(xs) }))
  } finally {
    rmSync(certs, { recursive: true, force: true })
  }
}
