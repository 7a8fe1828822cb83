import { createBastion } from '../bastion.js'
import { loadConfig } from '../config/load.js'
import { createLogger } from '../log.js'
import { expectPositionals, parse, stringFlag } from './args.js'
import { ENGINE } from '../engine/aedes.js'

export const START_HELP = `Usage: mqtt-bastion start [--config FILE]

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
`

// Bound on disconnecting clients and releasing resources after the drain; past it the process
// exits anyway so supervisors are not left waiting.
const STOP_TIMEOUT_MS = 5000

export async function startCommand (argv: string[], out: (s: string) => void): Promise<void> {
  const { values, positionals } = parse(argv, { config: { type: 'string' } })
  if (values.help === true) { out(START_HELP); return }
  expectPositionals(positionals, [])
  const file = stringFlag(values, 'config')
  const { config, file: used } = loadConfig({ ...(file === undefined ? {} : { file }), env: process.env })
  const log = createLogger({ level: config.log.level })
  log.info({ event: 'broker.starting', config: used ?? 'defaults' }, 'starting mqtt-bastion')
  const bastion = await createBastion(config, { logger: log })
  log.info({ event: 'broker.ready', pid: process.pid, engine: `aedes ${ENGINE.aedes} + ${ENGINE.patches.length} patches`, listeners: bastion.listeners.map((l) => `${l.type}://${l.host}:${l.port}`), ...(bastion.monitoring === undefined ? {} : { monitoring: `http://${bastion.monitoring.host}:${bastion.monitoring.port}` }) }, 'ready')

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
}
