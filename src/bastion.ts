import type { EventEmitter } from 'node:events'
import type { Client } from 'aedes'
import { dirname, join } from 'node:path'
import { Aedes, type EngineOptions } from './engine/aedes.js'
import type { Socket } from 'node:net'
import { createHooks } from './auth/hooks.js'
import { createLoginChain } from './auth/login-chain.js'
import type { Authenticator } from './auth/authenticator.js'
import { createGoAuthClient, type GoAuthClient } from './auth/http-backend.js'
import { createMemoryClientIds } from './auth/client-ids.js'
import { createSessionRegistry } from './auth/sessions.js'
import { createHttpAclPolicy } from './acl/http.js'
import { createMetricsPolicy } from './acl/metrics.js'
import { createMosquittoAclPolicy } from './acl/mosquitto-acl.js'
import type { AclPolicy } from './acl/policy.js'
import { cacheDecisions } from './acl/decision-cache.js'
import { prepareCertificates } from './certs/prepare.js'
import type { BastionConfig, CertificateIdentity, ListenerConfig } from './config/schema.js'
import { createPasswordPool } from './crypto/password-pool.js'
import { BastionError } from './errors.js'
import { createLogger, type Logger } from './log.js'
import { startListener } from './listeners/start.js'
import type { Listener } from './listeners/listener.js'
import { createAdmission } from './limits/admission.js'
import { createGuards } from './limits/guards.js'
import { createLimitReporter } from './limits/report.js'
import { createHealthCheck, type HealthCheck } from './monitoring/health.js'
import { startMonitoringServer } from './monitoring/http.js'
import { watchedBackend } from './monitoring/instrument.js'
import { createMetrics, type BrokerMetrics } from './monitoring/metrics.js'
import { assertPrivate } from './stores/permissions.js'
import { createStore } from './stores/create.js'
import { startClusterEngine, type ClusterEngine } from './cluster/engine.js'
import type { UserStore } from './stores/store.js'
import { drainDeliveries, trackDeliveries, type DrainTracker } from './shutdown.js'

/** Running /healthz and /metrics; host and port when it listens itself. */
export interface MonitoringHandle { readonly host?: string; readonly port?: number; close (): Promise<void> }
export type ServeMonitoring = (deps: { metrics: BrokerMetrics; health: HealthCheck; log: Logger }) => Promise<MonitoringHandle>

export interface BastionOptions {
  /** A pino logger to write to; by default one is made from `config.log`. */
  logger?: Logger
  /**
   * With monitoring.enabled: serves /healthz and /metrics. By default an HTTP server on
   * monitoring.host:monitoring.port; a `start --workers` worker hands both to its primary.
   */
  serveMonitoring?: ServeMonitoring
}

export interface Bastion {
  readonly config: BastionConfig
  readonly broker: Aedes
  readonly listeners: readonly Listener[]
  /** The local user store; undefined with an HTTP backend, which keeps its users itself. */
  readonly store: UserStore | undefined
  /** Where /healthz and /metrics are served; undefined when monitoring is off or served elsewhere. */
  readonly monitoring?: { readonly host: string; readonly port: number }
  /**
   * Re-reads what can change under a running broker (SIGHUP): user store and ACL files. A file
   * that no longer parses is rejected with one log line and the old contents keep serving.
   */
  reload (): Promise<void>
  /**
   * Stops accepting, delivers what publishers were already answered for (at most
   * `shutdown.drainTimeout`), disconnects clients (MQTT 5: DISCONNECT 0x8B), releases everything.
   */
  close (): Promise<void>
}

// The one place that maps configuration names to implementations (stores: stores/create.ts).
export { createStore }

/** What a policy factory may use besides the config: the HTTP backend's one client. */
interface PolicyDeps { log: Logger; backend?: GoAuthClient }
const POLICIES: Record<BastionConfig['acl']['policy'], (c: BastionConfig, d: PolicyDeps) => AclPolicy> = {
  metrics: (c) => createMetricsPolicy(c.acl.metrics),
  'mosquitto-acl': (c) => createMosquittoAclPolicy({ file: c.acl.file as string, allowSys: c.acl.allowSys }),
  http: (c, d) => {
    if (c.auth.store.type !== 'http') throw new BastionError('BASTION_ERR_CONFIG', 'config acl.policy: http needs auth.store.type http')
    return createHttpAclPolicy(c.auth.store, d.log.child({ module: 'acl' }), d.backend)
  }
}

/** TOTP is only as good as the clocks on both ends; say so where the operator looks first. */
function clockNotice (config: BastionConfig, log: Logger): void {
  // Codes are checked only when required (never for the http store: its service checks them).
  if (!config.auth.totp.required) return
  log.warn({ event: 'clock.notice', now: new Date().toISOString(), window: config.auth.totp.window },
    'TOTP codes are checked against this machine\'s clock: keep it NTP-synchronised (check with: timedatectl show -p NTPSynchronized, ' +
    'chronyc tracking, or timedatectl timesync-status for systemd-timesyncd); devices need a synchronised clock too')
}

/**
 * Starts the broker described by `config`: checks files, opens the user store, starts aedes
 * with our hooks and binds every listener. Resolves once all listeners accept connections.
 *
 * @example
 * ```ts
 * import { createBastion, loadConfig } from 'mqtt-bastion'
 * const bastion = await createBastion(loadConfig({ file: 'bastion.yaml' }).config)
 * process.on('SIGTERM', () => { bastion.close().then(() => process.exit(0)) })
 * ```
 */
export async function createBastion (config: BastionConfig, opts: BastionOptions = {}): Promise<Bastion> {
  const log = opts.logger ?? createLogger({ level: config.log.level })
  clockNotice(config, log)
  // Only a broker that serves /metrics pays for counting.
  const metrics = config.monitoring.enabled ? createMetrics({ totpWindow: config.auth.totp.window }) : undefined
  for (const l of config.listeners) {
    if (l.type !== 'tcp') await prepareCertificates(l, config.devCertificates, log)
  }
  if (config.auth.store.type === 'file' || config.auth.store.type === 'sqlite') await assertPrivate(config.auth.store.path, 'user store')

  const s = config.auth.store
  const store = s.type === 'http' ? undefined : createStore(config, log)
  // Logins and ACL checks share one HTTP client: one connection pool, one outage log line.
  const rawBackend = s.type === 'http' ? createGoAuthClient(s, log.child({ module: 'backend' })) : undefined
  const watched = rawBackend !== undefined && metrics !== undefined ? watchedBackend(rawBackend, metrics) : undefined
  const backend = watched?.client ?? rawBackend
  const passwords = createPasswordPool(config.auth.workers)
  let policy: AclPolicy | undefined
  let authenticator: Authenticator | undefined
  /** Releases what logins and ACL checks hold, in reverse order of creation. */
  async function release (): Promise<void> {
    await passwords.close()
    await authenticator?.close?.()
    await policy?.close?.()
    await backend?.close()
    await store?.close()
  }
  let cluster: ClusterEngine | undefined
  try {
    // Per-message checks (publish, delivery) answered once per connection and topic: acl/decision-cache.ts.
    policy = cacheDecisions(POLICIES[config.acl.policy](config, { log, ...(backend === undefined ? {} : { backend }) }))
    // With `cluster`: routing, sessions and our security state through Redis (docs/cluster.md);
    // a Redis that cannot be reached stops the start here.
    if (config.cluster !== undefined) cluster = await startClusterEngine(config.cluster, log.child({ module: 'cluster' }), config.auth.lockout)
  } catch (err) {
    await release()
    throw err
  }
  // Client id holders and owners, lockout counters and revocations every node shares.
  const shared = cluster?.state
  // Where hooks, limits and sessions report what metrics count.
  const eventSink = metrics === undefined ? {} : { onEvent: metrics.onEvent }
  const chain = createLoginChain(config, {
    passwords, log, ...(store === undefined ? {} : { store }), ...(backend === undefined ? {} : { backend }),
    ...(metrics === undefined ? {} : { metrics }), ...(shared === undefined ? {} : { shared: shared.lockout })
  })
  const { lockout, credentials } = chain
  authenticator = chain.authenticator
  const prefix = config.acl.metrics.prefix
  // Which listener each socket came in on, for the certificate identity mode of that listener.
  const origin = new WeakMap<object, ListenerConfig>()
  const certificateIdentity = (socket: unknown): CertificateIdentity => {
    const l = typeof socket === 'object' && socket !== null ? origin.get(socket) : undefined
    return l === undefined || l.type === 'tcp' ? 'none' : l.certificateIdentity
  }
  // Re-checks read the store itself, not the timed view: they are not logins.
  const sessions = createSessionRegistry({
    log: log.child({ module: 'auth' }),
    clientIdBinding: config.auth.clientIdBinding,
    recheckInterval: config.auth.recheckInterval,
    onRevoke: (user: string) => { credentials.forget(user) },
    ...(store === undefined ? {} : { store }),
    ...(shared === undefined ? {} : { shared: shared.holders }),
    ...eventSink
  })
  // Redis gone for connectTimeout: nothing can be routed (QoS 1/2 PUBLISHes go unanswered,
  // QoS 0 may be lost); devices are told to reconnect (refused 0x88 until Redis answers) and
  // keep their data meanwhile.
  shared?.onOutage(() => { sessions.endAll() })
  // A user changed through any node or the CLI: its sessions here are re-checked at once.
  shared?.onRevoke((user) => { sessions.recheck(user).catch((err: unknown) => log.error({ event: 'session.recheck_error', err }, 'unexpected re-check error')) })
  const serverWillTopic = config.will.serverWill ? (user: string): string => `${prefix}/${user}/Estado` : undefined
  const hooks = createHooks({
    authenticator: chain.authenticator,
    sessions,
    policy,
    clientIdPrefixes: config.auth.clientIdPrefixes,
    // In a cluster in Redis, for every store; else in the SQLite store (shared with the CLI,
    // survives restarts), else in memory.
    ...(config.auth.clientIdBinding === 'owner' ? { clientIdOwners: shared?.owners ?? store?.clientIds ?? createMemoryClientIds() } : {}),
    certificateIdentity,
    log: log.child({ module: 'auth' }),
    ...(serverWillTopic === undefined ? {} : { serverWillTopic }),
    ...eventSink
  })

  const listeners: Listener[] = []
  let broker: Aedes | undefined
  let monitoring: MonitoringHandle | undefined
  let deliveries: DrainTracker | undefined
  try {
    await passwords.ready()
    if (store !== undefined && (config.auth.store.type === 'file' || config.auth.store.type === 'sqlite') && (await store.list()).length === 0) {
      log.warn({ event: 'store.empty', store: config.auth.store.type }, 'no users yet: nobody can log in; add one with: mqtt-bastion user add NAME (npx mqtt-bastion inside the project folder)')
    }
    if (config.auth.store.type === 'file') {
      const db = join(dirname(config.auth.store.path), 'users.db')
      log.warn({ event: 'store.legacy', store: 'file', path: config.auth.store.path },
        `the JSON user store rewrites the whole file on every login and slows down as users are added; use auth.store { type: sqlite, path: ${db} }: a users.json in that folder is migrated into it at first start (docs/fleet.md)`)
    }
    // A database that is down at start is not fatal: logins are refused (0x88) until it answers.
    await store?.ping().catch((err: Error) => log.warn({ event: 'store.check_failed', reason: err.message }, 'user store did not answer at start'))
    // config.limits: checked before the auth hooks see a packet, and aedes' own limits set.
    const report = createLimitReporter({ log: log.child({ module: 'limits' }), ...eventSink })
    const guards = createGuards(hooks.options, { limits: config.limits, report, log: log.child({ module: 'auth' }), identityOf: hooks.identityOf, loginFailed: hooks.loginFailed, ...eventSink })
    const engineOptions: EngineOptions = {
      ...guards.options,
      // A refused 3.1.1 PUBLISH: acknowledged and dropped, or the connection closed (patch 0014).
      unauthorizedPublishV3: config.acl.deniedPublishV311,
      // Caps what a DISCONNECT may set too (a CONNECT's request is capped by the hooks). With no
      // session outliving its connection (the default), aedes skips, for every QoS 1 PUBLISH, the
      // lookup of offline subscribers there can never be (patch 0023).
      ...(config.sessions.maxExpiry > 0 ? { sessionExpiryIntervalLimit: config.sessions.maxExpiry } : { ephemeralSessions: true })
    }
    broker = await Aedes.createBroker({ ...engineOptions, ...cluster?.options })
    hooks.attach(broker)
    // Each will is stored with its user, and a crashed node's are published once by a survivor.
    // A crashed node's devices without a will get the server will from the sweep, as a drop here.
    const serverWillOf = (c: Client): { user: string; topic: string } | undefined => {
      const identity = hooks.identityOf(c)
      return identity === undefined || identity.hasWill || serverWillTopic === undefined ? undefined : { user: identity.user, topic: serverWillTopic(identity.user) }
    }
    cluster?.wills.start(broker, { userOf: (c) => hooks.identityOf(c)?.user, serverWillOf, ...(store === undefined ? {} : { store }) })
    guards.attach(broker)
    const listenerLimits = createAdmission({ limits: config.limits, report, lockout, log: log.child({ module: 'auth' }), ...(metrics === undefined ? {} : { onEvent: metrics.onEvent }) })
    deliveries = trackDeliveries(broker)
    sessions.start()
    metrics?.attach(broker)
    ;(broker as unknown as EventEmitter).on('error', (err: Error) => log.error({ event: 'broker.error', err }, 'broker error'))
    const b = broker
    for (const l of config.listeners) {
      const handle = (socket: Socket): void => {
        origin.set(socket, l)
        metrics?.trackSocket(socket)
        guards.accept(socket)
        b.handle(socket)
      }
      const started = await startListener(l, handle, log, listenerLimits)
      listeners.push(started)
      if (l.type !== 'tcp') metrics?.certificate(`${l.type}://${started.host}:${started.port}`, l.cert)
    }
    if (metrics !== undefined) {
      // Served only after every listener is bound and closed first on the way down, so the
      // listeners' own state is the whole answer.
      const health = createHealthCheck({
        listeners: () => {
          const down = listeners.find((l) => !l.listening)
          return down === undefined ? undefined : `${down.type} listener ${down.host}:${down.port} is not accepting`
        },
        ...(store === undefined ? {} : { store }),
        ...(watched === undefined ? {} : { backendOutage: watched.outage })
      })
      const serve = opts.serveMonitoring ?? (async (deps) => await startMonitoringServer(config.monitoring, deps))
      monitoring = await serve({ metrics, health, log: log.child({ module: 'monitoring' }) })
    }
  } catch (err) {
    sessions.close()
    await monitoring?.close()
    await Promise.all(listeners.map(async (l) => await l.close()))
    if (broker !== undefined) await new Promise<void>((resolve) => broker?.close(() => resolve()))
    await cluster?.close()
    await release()
    throw err
  }
  const acl = policy

  let closing: Promise<void> | undefined
  const b = broker
  const served = monitoring
  return {
    config,
    broker: b,
    listeners,
    store,
    ...(served?.host === undefined || served.port === undefined ? {} : { monitoring: { host: served.host, port: served.port } }),
    async reload () {
      const parts: Array<[string, (() => Promise<void>) | undefined]> = [
        ['user store', store?.reload?.bind(store)],
        ['acl policy', acl.reload?.bind(acl)],
        ...listeners.map((l): [string, (() => Promise<void>) | undefined] => [`${l.type} listener ${l.host}:${l.port} certificates`, l.reload?.bind(l)])
      ]
      for (const [what, reload] of parts) {
        if (reload === undefined) continue
        try {
          await reload()
          log.info({ event: 'reload.ok', what }, `${what} reloaded`)
        } catch (err) {
          log.error({ event: 'reload.failed', what, reason: (err as Error).message }, `${what} not reloaded; the previous one keeps serving`)
        }
      }
      // A reloaded password file may have dropped or changed users: end their sessions now.
      if (config.auth.recheckInterval > 0) await sessions.recheck()
    },
    close () {
      closing ??= (async () => {
        sessions.close()
        // Reverse order of start: the monitoring listener came up last.
        await monitoring?.close()
        // Stop accepting first; server.close() resolves once the broker has dropped its clients.
        const stopped = Promise.all(listeners.map(async (l) => await l.close()))
        if (deliveries !== undefined) await drainDeliveries(deliveries, config.shutdown.drainTimeout, b.connectedClients, log)
        await new Promise<void>((resolve) => b.close(() => resolve()))
        await stopped
        await cluster?.close()
        await release()
        log.info({ event: 'broker.stopped' }, 'broker stopped')
      })()
      return closing
    }
  }
}
