// What runs in each setup of the cluster bench: a throwaway redis-server (Debian's) and one or two
// of our brokers as real processes (`node dist/cli/main.js start --config ...`), started and
// stopped through bench/compare/processes.mjs (pinned with taskset, killed by pid on any exit
// path). The nodes' config files sit in one folder, so they share its SQLite user store
// (data/users.db, one host), where the users were put once with `user import`.
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import bcrypt from 'bcryptjs'
import { generateSecret, generateSync } from 'otplib'
import { startBroker, stopBroker, summariseLog } from '../compare/processes.mjs'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
export const CLI = join(ROOT, 'dist', 'cli', 'main.js')
export const PAIRS = 8 // 8 publishers -> 8 subscribers, publisher i to subscriber i
const PASSWORD = 'bench-password-1'
const READY = /"event":"broker\.ready"/
// Node options for our broker processes only, e.g. a CPU profile of each node:
// BENCH_CLUSTER_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'
const NODE_ARGS = (process.env.BENCH_CLUSTER_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')

export const SETUPS = {
  single: { key: 'single', label: '1 node, no cluster', nodes: 1, redis: false },
  one: { key: 'one', label: '1 node on Redis', nodes: 1, redis: true },
  two: { key: 'two', label: '2 nodes on Redis (pub A → sub B)', nodes: 2, redis: true }
}

export function redisPath () {
  for (const p of ['/usr/bin/redis-server', '/usr/local/bin/redis-server']) if (existsSync(p)) return p
  return undefined
}

const range = (n) => Array.from({ length: n }, (_, i) => i)
const userName = (setup, rep, i) => `r${rep}${setup}p${i}`

/**
 * Under `dir`: certs/ (`certs init`: CA + ECDSA P-256 server certificate) and broker/, the
 * folder of every node's config, with data/users.db holding one user per pair, setup and
 * repetition (cost-4 bcrypt: logins are not what is measured; user|TOTP as shipped).
 */
export function setupFiles (dir, { reps, setups }) {
  execFileSync(process.execPath, [CLI, 'certs', 'init', '--out', join(dir, 'certs')], { stdio: 'pipe' })
  const folder = join(dir, 'broker')
  mkdirSync(folder, { mode: 0o700 })
  const hash = bcrypt.hashSync(PASSWORD, 4)
  const secrets = new Map()
  const lines = []
  for (let rep = 1; rep <= reps; rep++) {
    for (const s of setups) {
      for (const i of range(PAIRS)) {
        const username = userName(s, rep, i)
        secrets.set(username, generateSecret())
        lines.push(JSON.stringify({ username, passwordHash: hash, totpSecret: secrets.get(username) }))
      }
    }
  }
  writeFileSync(join(dir, 'users.jsonl'), lines.join('\n') + '\n', { mode: 0o600 })
  const base = writeConfig(folder, 'import', 0, undefined) // the CLI finds data/users.db through it
  execFileSync(process.execPath, [CLI, 'user', 'import', join(dir, 'users.jsonl'), '--config', base], { stdio: 'pipe' })
  return { dir, folder, secrets, ca: readFileSync(join(dir, 'certs', 'ca.crt'), 'utf8') }
}

/**
 * A node's config (JSON is YAML): the limits of bench/compare (raised only where the load would
 * trip them), TLS 1.3 listener, log level info as shipped; `cluster` when `redisPort` is given.
 */
function writeConfig (folder, name, port, redisPort) {
  const config = {
    listeners: [{ type: 'tls', host: '127.0.0.1', port, cert: '../certs/server.crt', key: '../certs/server.key', minVersion: 'TLSv1.3' }],
    limits: {
      maxConnections: 1_000_000,
      maxConnectionsPerIp: 0,
      publishRate: { messages: 1_000_000, bytes: 1_073_741_824 } // the schema's maxima
    },
    log: { level: 'info' },
    ...(redisPort === undefined ? {} : { cluster: { nodeId: `bench-${name}`, redis: { host: '127.0.0.1', port: redisPort, keyPrefix: 'bench:' } } })
  }
  const file = join(folder, `${name}.json`)
  writeFileSync(file, JSON.stringify(config, null, 2) + '\n')
  return file
}

/**
 * Starts the setup's processes: redis-server first (when clustered), then node A, then node B;
 * `pin` gives each its CPU (undefined: unpinned). Resolves with { procs: [{ name, handle }],
 * ports: { a, b } }; on a failure stops what it started and throws.
 */
export async function startSetup (setup, files, rep, pin) {
  const started = []
  const log = (name) => join(files.dir, `${setup.key}-r${rep}-${name}.log`)
  try {
    let redisPort
    if (setup.redis) {
      const bin = redisPath()
      if (bin === undefined) throw new Error('redis-server not found: apt-get install redis-server')
      const rdir = join(files.dir, `redis-${setup.key}-r${rep}`)
      mkdirSync(rdir)
      const kind = {
        key: 'redis', ours: false,
        start: (port) => ({
          command: bin,
          args: ['--port', String(port), '--bind', '127.0.0.1', '--dir', rdir, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--logfile', ''],
          ready: /Ready to accept connections/
        })
      }
      const handle = await startBroker(kind, { cpu: pin.redis, logFile: log('redis') })
      started.push({ name: 'redis', handle })
      redisPort = handle.port
    }
    for (const name of ['a', 'b'].slice(0, setup.nodes)) {
      const kind = { key: `node_${name}`, ours: true, start: (port) => ({ command: process.execPath, args: [...NODE_ARGS, CLI, 'start', '--config', writeConfig(files.folder, `node-${name}`, port, redisPort)], ready: READY }) }
      const handle = await startBroker(kind, { cpu: name === 'a' ? pin.nodeA : pin.nodeB, logFile: log(`node-${name}`) })
      started.push({ name: `node_${name}`, handle })
    }
    started.sort((x, y) => x.name.localeCompare(y.name)) // node_a, node_b, redis: the report's order
    const port = (n) => started.find((p) => p.name === n)?.handle.port
    return { procs: started, ports: { a: port('node_a'), b: port('node_b') ?? port('node_a') } }
  } catch (err) {
    await stopSetup({ procs: started })
    throw err
  }
}

/** Stops the nodes, then Redis (SIGTERM, SIGKILL after 10 s); returns each one's exit and notable log lines. */
export async function stopSetup ({ procs }) {
  const out = {}
  for (const p of [...procs.filter((p) => p.name !== 'redis'), ...procs.filter((p) => p.name === 'redis')]) {
    out[p.name] = { exit: await stopBroker(p.handle), notable: summariseLog(p.handle) }
  }
  return out
}

/**
 * The pairs' logins: `user|code` (TOTP), one user per pair. The subscriber is its publisher's
 * user (the metrics policy lets a user read only its own branch) with the next step's code,
 * accepted now (window 1): a code is claimed once, across nodes too (shared SQLite). Publishers
 * dial node A, subscribers node B (`port`: the same node with one node).
 */
export function pairCreds (setup, rep, files, ports) {
  const step = Math.floor(Date.now() / 30_000)
  const login = (user, clientId, s) => ({ clientId, username: `${user}|${generateSync({ secret: files.secrets.get(user), epoch: s * 30 })}`, password: PASSWORD })
  return range(PAIRS).map((i) => {
    const user = userName(setup.key, rep, i)
    return {
      pubCred: { ...login(user, `${user}-pub`, step), port: ports.a },
      subCred: { ...login(user, `${user}-sub`, step + 1), port: ports.b },
      topic: `metrics/${user}/Temperatura`,
      filter: `metrics/${user}/#`
    }
  })
}
