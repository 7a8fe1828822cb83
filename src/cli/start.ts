import type { BastionConfig } from '../config/schema.js'
import { WORKERS_EXPECTED, workersValue } from '../config/cluster.js'
import { loadConfig } from '../config/load.js'
import { BastionError } from '../errors.js'
import { createLogger } from '../log.js'
import { answerPrimary } from '../cluster/worker-monitoring.js'
import { runPrimary, workerConfig, workerRole, type WorkerReady, type WorkerRole } from '../cluster/workers.js'
import { expectPositionals, parse, stringFlag, UsageError } from './args.js'

export const START_HELP = `Usage: mqtt-bastion start [--config FILE] [--workers N|auto]

Runs the broker in the foreground, logging JSON lines to standard output.
Without a config file (neither --config nor env BASTION_CONFIG): TLS on 0.0.0.0:8883 with
certs/server.crt and certs/server.key (a development CA and server certificate are generated
there when missing), users in data/users.db (SQLite).
SIGINT/SIGTERM stop it cleanly: no new connections or PUBLISHes are taken, messages already
acknowledged to publishers are delivered (waiting at most shutdown.drainTimeout seconds), then
clients are disconnected (MQTT 5 clients get DISCONNECT 0x8B).
SIGHUP re-reads TLS certificates and CRLs, the user store and ACL files without dropping
connected clients; a file that no longer loads is refused in the log and the old one stays.
With monitoring.enabled in the config, GET /healthz and GET /metrics (Prometheus) are served
on monitoring.host:monitoring.port (127.0.0.1:9464 unless set).

--workers N runs N broker processes (node:cluster workers) sharing the listening ports, for a
host with several cores; auto: one per core. It overrides cluster.workers (default 1). N > 1
needs cluster.redis: the workers share routing, sessions and security state through Redis.
Each worker is node <cluster.nodeId>-w<i> and logs with its pid. The primary process serves
the monitoring port for all: /metrics sums the workers' counters, /healthz is ok when every
worker is ready and healthy (else 503 naming the one that is not). It restarts a worker that
dies (at most 5 times a minute, then it stops and exits 1), passes SIGHUP, SIGINT and SIGTERM
on to every worker, and exits 0 once all have stopped; a second SIGINT/SIGTERM kills them. A
worker that fails to start (Redis unreachable, a port in use) stops them all with its error
line (exit 1).
See docs/cluster.md, "Several processes on one host".
`

// Bound on disconnecting clients and releasing resources after the drain; past it the process
// exits anyway so supervisors are not left waiting.
const STOP_TIMEOUT_MS = 5000

/** `--workers`: a usage error names the flag and what it takes. */
function workersFlag (v: string | undefined): number | undefined {
  if (v === undefined) return undefined
  const n = workersValue(v)
  if (n === undefined) throw new UsageError(`--workers must be ${WORKERS_EXPECTED}, got "${v}"`)
  return n
}

export async function startCommand (argv: string[], out: (s: string) => void): Promise<void> {
  const { values, positionals } = parse(argv, { config: { type: 'string' }, workers: { type: 'string' } })
  if (values.help === true) { out(START_HELP); return }
  expectPositionals(positionals, [])
  const workers = workersFlag(stringFlag(values, 'workers'))
  const file = stringFlag(values, 'config')
  const { config, file: used } = loadConfig({ ...(file === undefined ? {} : { file }), env: process.env })
  // A worker re-runs this command line (node:cluster forks argv): it runs one broker.
  const role = workerRole(process.env)
  if (role !== undefined) {
    // The IPC channel to the primary keeps a worker alive: one that failed must exit itself,
    // after main() has written its error line.
    await runBroker(workerConfig(config, role), used, role).catch((err: unknown) => {
      setImmediate(() => process.exit(1))
      throw err
    })
    return
  }
  const count = workers ?? config.cluster?.workers ?? 1
  if (count === 1) { await runBroker(config, used); return }
  // Without Redis each worker would be a broker of its own: a subscriber on one would miss
  // what a device on another publishes, and a code used on one would work on the next.
  if (config.cluster === undefined) {
    throw new BastionError('BASTION_ERR_CONFIG', `--workers ${count} needs cluster.redis in the config (cluster: { redis: { host, port } }): the workers share routing, sessions and security state through Redis`)
  }
  // Its lines name workers' pids (`pid`); its own is in workers.starting.
  const log = createLogger({ level: config.log.level })
  await runPrimary({
    count,
    nodeId: config.cluster.nodeId,
    drainTimeout: config.shutdown.drainTimeout,
    log,
    fatal: (line) => { process.stderr.write(line + '\n') },
    exit: (code) => process.exit(code),
    ...(config.monitoring.enabled ? { monitoring: { host: config.monitoring.host, port: config.monitoring.port } } : {})
  })
}

/** One broker in this process: the whole of `start` without workers, or one worker. */
async function runBroker (config: BastionConfig, used: string | undefined, role?: WorkerRole): Promise<void> {
  // Loaded here, not at the top: a primary runs no broker and needs none of it.
  const { createBastion } = await import('../bastion.js')
  const { ENGINE, engineLine } = await import('../engine/aedes.js')
  const root = createLogger({ level: config.log.level })
  // Workers write to one stdout: each line says which process wrote it.
  const log = role === undefined ? root : root.child({ pid: process.pid, worker: role.index })
  log.info({ event: 'broker.starting', config: used ?? 'defaults', ...(role === undefined ? {} : { node: config.cluster?.nodeId, authWorkers: config.auth.workers, maxConnections: config.limits.maxConnections, maxConnectionsPerIp: config.limits.maxConnectionsPerIp }) }, 'starting mqtt-bastion')
  // A worker's /healthz and /metrics are served by the primary, for all workers.
  const bastion = await createBastion(config, { logger: log, ...(role === undefined ? {} : { serveMonitoring: answerPrimary }) })
  const listeners = bastion.listeners.map((l) => `${l.type}://${l.host}:${l.port}`)
  const monitoring = bastion.monitoring === undefined ? undefined : `http://${bastion.monitoring.host}:${bastion.monitoring.port}`
  log.info({ event: 'broker.ready', ...(role === undefined ? { pid: process.pid } : {}), engine: engineLine(ENGINE), listeners, ...(monitoring === undefined ? {} : { monitoring }) }, 'ready')

  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    log.info({ event: 'broker.stopping', signal }, 'stopping')
    const timer = setTimeout(() => {
      log.error({ event: 'broker.stop_timeout' }, 'clients did not close in time; exiting')
      log.flush()
      process.exit(1)
    }, config.shutdown.drainTimeout * 1000 + STOP_TIMEOUT_MS)
    timer.unref()
    bastion.close().then(() => {
      log.flush()
      process.exit(0)
    }, (err: unknown) => {
      log.error({ event: 'broker.stop_failed', err }, 'stop failed')
      log.flush()
      process.exit(1)
    })
  }
  // SIGHUP re-reads certificates, the CRL, the user store and ACL files (Mosquitto does the same).
  process.on('SIGHUP', () => {
    log.info({ event: 'broker.reloading', signal: 'SIGHUP' }, 'reloading')
    void bastion.reload()
  })
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
  if (role !== undefined) {
    // Sent after the handlers above: a SIGHUP forwarded from now on reloads, never kills.
    const ready: WorkerReady = { bastion: 'ready', listeners }
    process.send?.(ready)
  }
}
