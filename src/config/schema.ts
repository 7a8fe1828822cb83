import { resolve } from 'node:path'
import { bool, fail, host, int, object, oneOf, str } from './fields.js'
import { AUTH_HARDENING_KEYS, parseAuthHardening, parseLimits, parseShutdown, type AuthHardening, type LimitsConfig, type ShutdownConfig } from './hardening.js'
import { parseCluster, shownTls, type ClusterConfig } from './cluster.js'
import { listener, type ListenerConfig } from './listeners.js'
import { store, totpRequired, type StoreConfig } from './stores.js'

// The types every module imports from here; each key's own parsing lives beside it.
export type { CertificateIdentity, ListenerConfig, TcpListenerConfig, TlsListenerConfig, TlsVersion, WssListenerConfig } from './listeners.js'
export { DEFAULT_TLS_CIPHERS } from './listeners.js'
export type { FileStoreConfig, HttpBackendConfig, MosquittoPasswdStoreConfig, MysqlColumns, MysqlStoreConfig, SqliteStoreConfig, StoreConfig } from './stores.js'

export type AclPolicyName = 'metrics' | 'mosquitto-acl' | 'http'

/** The health and Prometheus metrics HTTP listener: off by default, loopback unless a host is given. */
export interface MonitoringConfig {
  readonly enabled: boolean
  readonly host: string
  readonly port: number
}

export interface BastionConfig {
  readonly listeners: readonly ListenerConfig[]
  readonly auth: {
    readonly store: StoreConfig
    /** `required`: the username is `user|code`; always true for the file and MySQL stores. */
    readonly totp: { readonly window: number; readonly replayProtection: boolean; readonly required: boolean }
    /** Worker threads for bcrypt; 0 means one per CPU core, at most 4. */
    readonly workers: number
    /** Client ids must start with one of these (Mosquitto's clientid_prefixes); empty: any. */
    readonly clientIdPrefixes: readonly string[]
  } & AuthHardening
  readonly acl: {
    readonly policy: AclPolicyName
    readonly metrics: { readonly prefix: string; readonly leaves: readonly string[] }
    /** The Mosquitto acl_file, for policy mosquitto-acl. */
    readonly file?: string
    /** mosquitto-acl only: `$SYS` topics are reachable when the file grants them and this is true. */
    readonly allowSys: boolean
    /**
     * An MQTT 3.1.1 PUBLISH the policy refuses (3.1.1 has no reason codes): `acknowledge` answers
     * it as if it went through and drops it, keeping the connection (Mosquitto's way, the default
     * under mosquitto-acl); `disconnect` closes the connection (the default otherwise). MQTT 5
     * clients always get PUBACK/PUBREC 0x87 and keep the connection.
     */
    readonly deniedPublishV311: 'acknowledge' | 'disconnect'
  }
  readonly sessions: { readonly maxExpiry: number }
  readonly will: { readonly serverWill: boolean }
  readonly log: { readonly level: LogLevel }
  readonly monitoring: MonitoringConfig
  readonly limits: LimitsConfig
  readonly shutdown: ShutdownConfig
  /** Generate a development CA and server certificate when a TLS listener's files are missing. */
  readonly devCertificates: boolean
  /** Several nodes sharing routing and sessions through Redis; absent: a single node. */
  readonly cluster?: ClusterConfig
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
export const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

/** A leaf or prefix is one topic level: no separators, wildcards, `$` or NUL. */
const TOPIC_LEVEL = /^[^/+#$\u0000]+$/


/**
 * Validates a raw config document (already parsed from YAML) into a frozen BastionConfig.
 * Relative paths resolve against `base` (the config file's folder, or the working directory).
 * Unknown keys are errors: a typo must never silently fall back to a default.
 */
export function parseConfig (doc: unknown, base: string, opts: { devCertificates?: boolean; env?: NodeJS.ProcessEnv } = {}): BastionConfig {
  const root = object(doc, '', ['listeners', 'auth', 'acl', 'sessions', 'will', 'log', 'monitoring', 'limits', 'shutdown', 'devCertificates', 'cluster'])

  const rawListeners = root.listeners ?? [{ type: 'tls' }]
  if (!Array.isArray(rawListeners) || rawListeners.length === 0) fail('listeners', 'must be a non-empty list')
  const listeners = rawListeners.map((l, i) => listener(l, i, base))
  // Passwords must not cross a network in clear text: some listener encrypts (tls, wss), or a
  // trusted proxy terminates TLS in front of a tcp listener. A tcp listener alone is a plaintext
  // broker, refused rather than started by a typo in a listener's type.
  const encrypted = (l: ListenerConfig): boolean => l.type !== 'tcp' || l.proxyProtocol !== undefined
  if (!listeners.some(encrypted)) fail('listeners', 'needs a tls or wss listener (or a tcp listener with proxyProtocol behind a TLS-terminating proxy)')

  const auth = object(root.auth, 'auth', ['store', 'totp', 'workers', 'clientIdPrefixes', ...AUTH_HARDENING_KEYS])
  const totp = object(auth.totp, 'auth.totp', ['window', 'replayProtection', 'required'])
  const userStore = store(auth.store, base, opts.env ?? {})
  const required = totpRequired(totp, userStore)
  const prefixes = auth.clientIdPrefixes ?? []
  if (!Array.isArray(prefixes)) fail('auth.clientIdPrefixes', 'must be a list of strings')
  for (const [i, pre] of prefixes.entries()) {
    if (typeof pre !== 'string' || pre.length === 0) fail(`auth.clientIdPrefixes[${i}]`, 'must be a non-empty string')
  }
  const acl = object(root.acl, 'acl', ['policy', 'metrics', 'file', 'allowSys', 'deniedPublishV311'])
  const policy = oneOf(acl, 'policy', 'acl.policy', 'metrics', ['metrics', 'mosquitto-acl', 'http'] as const)
  if (policy === 'mosquitto-acl' && acl.file === undefined) fail('acl.file', 'is required with policy mosquitto-acl')
  if (policy !== 'mosquitto-acl' && acl.file !== undefined) fail('acl.file', 'is only used with policy mosquitto-acl')
  if (policy !== 'mosquitto-acl' && acl.allowSys !== undefined) fail('acl.allowSys', 'is only used with policy mosquitto-acl')
  if (policy === 'http' && userStore.type !== 'http') fail('acl.policy', 'http needs auth.store.type http (the backend it asks)')
  const metrics = object(acl.metrics, 'acl.metrics', ['prefix', 'leaves'])
  const prefix = str(metrics, 'prefix', 'acl.metrics.prefix', 'metrics')
  if (!TOPIC_LEVEL.test(prefix)) fail('acl.metrics.prefix', 'must be one topic level without / + # $')
  const leaves = metrics.leaves ?? ['Temperatura', 'Humedad', 'Estado']
  if (!Array.isArray(leaves) || leaves.length === 0) fail('acl.metrics.leaves', 'must be a non-empty list')
  for (const [i, leaf] of leaves.entries()) {
    if (typeof leaf !== 'string' || !TOPIC_LEVEL.test(leaf)) fail(`acl.metrics.leaves[${i}]`, 'must be one topic level without / + # $')
  }
  const sessions = object(root.sessions, 'sessions', ['maxExpiry'])
  const will = object(root.will, 'will', ['serverWill'])
  const log = object(root.log, 'log', ['level'])
  const monitoring = object(root.monitoring, 'monitoring', ['enabled', 'host', 'port'])
  const cluster = parseCluster(root.cluster, base, opts.env ?? {})

  return Object.freeze({
    listeners: Object.freeze(listeners),
    auth: Object.freeze({
      store: userStore,
      totp: Object.freeze({
        window: int(totp, 'window', 'auth.totp.window', 1, 0, 10),
        replayProtection: bool(totp, 'replayProtection', 'auth.totp.replayProtection', true),
        required
      }),
      workers: int(auth, 'workers', 'auth.workers', 0, 0, 64),
      clientIdPrefixes: Object.freeze([...prefixes as string[]]),
      ...parseAuthHardening(auth)
    }),
    acl: Object.freeze({
      policy,
      metrics: Object.freeze({ prefix, leaves: Object.freeze([...leaves as string[]]) }),
      ...(acl.file === undefined ? {} : { file: resolve(base, str(acl, 'file', 'acl.file')) }),
      allowSys: bool(acl, 'allowSys', 'acl.allowSys', false),
      deniedPublishV311: oneOf(acl, 'deniedPublishV311', 'acl.deniedPublishV311',
        policy === 'mosquitto-acl' ? 'acknowledge' : 'disconnect', ['acknowledge', 'disconnect'] as const)
    }),
    sessions: Object.freeze({ maxExpiry: int(sessions, 'maxExpiry', 'sessions.maxExpiry', 0, 0, 0xFFFFFFFF) }),
    will: Object.freeze({ serverWill: bool(will, 'serverWill', 'will.serverWill', true) }),
    log: Object.freeze({ level: oneOf(log, 'level', 'log.level', 'info', LOG_LEVELS) }),
    // /metrics and /healthz carry no credentials of their own: loopback unless the operator says otherwise.
    monitoring: Object.freeze({
      enabled: bool(monitoring, 'enabled', 'monitoring.enabled', false),
      host: host(monitoring, 'monitoring.host', '127.0.0.1'),
      port: int(monitoring, 'port', 'monitoring.port', 9464, 0, 65535)
    }),
    limits: parseLimits(root.limits),
    shutdown: parseShutdown(root.shutdown),
    devCertificates: bool(root, 'devCertificates', 'devCertificates', opts.devCertificates ?? false),
    ...(cluster === undefined ? {} : { cluster })
  })
}

/** The config as JSON with every secret blanked, for `config check` and logs. */
export function redactedConfig (config: BastionConfig): unknown {
  // Only the store's own password is a secret; `columns.password` is a column name.
  // Redis' TLS files are shown by name: the private key's contents never, the rest is noise.
  const tls = config.cluster?.redis.tls
  return JSON.parse(JSON.stringify(config, function (this: unknown, key, value: unknown) {
    if (tls !== undefined && value === tls) return shownTls(tls)
    return key === 'password' && this !== (config.auth.store as { columns?: unknown }).columns ? '[redacted]' : value
  }))
}
