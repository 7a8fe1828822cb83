import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { createSecureContext } from 'node:tls'
import { bool, fail, host, int, object, oneOf, str, type Raw } from './fields.js'
import { AUTH_HARDENING_KEYS, parseAuthHardening, parseLimits, parseShutdown, type AuthHardening, type LimitsConfig, type ShutdownConfig } from './hardening.js'
import { origins, wsPath } from './wss.js'
import { parseProxyProtocol, type ProxyProtocolConfig } from './proxy-protocol.js'
import { parseCluster, type ClusterConfig } from './cluster.js'

export type TlsVersion = 'TLSv1.2' | 'TLSv1.3'

export interface TlsListenerConfig {
  readonly type: 'tls'
  readonly host: string
  readonly port: number
  readonly cert: string
  readonly key: string
  readonly ca?: string
  readonly minVersion: TlsVersion
  readonly requireClientCertificate: boolean
  /**
   * Who the client is, from its verified certificate: `none` (login decides), `cn` (the CN is
   * the user, no password: Mosquitto's use_identity_as_username), `subject` (the full RFC 2253
   * subject: use_subject_as_username), `bound` (a normal login whose user must equal the CN).
   */
  readonly certificateIdentity: CertificateIdentity
  /** PEM certificate revocation list; a revoked client certificate fails the handshake. */
  readonly crl?: string
  /**
   * OpenSSL cipher string, in the server's order of preference. Names starting with TLS_ set the
   * TLS 1.3 suites; without any, TLS 1.3 keeps Node's defaults. Default: DEFAULT_TLS_CIPHERS.
   */
  readonly ciphers: string
  /** Accept only connections from these proxies, each opening with a PROXY protocol header (docs/configuration.md). */
  readonly proxyProtocol?: ProxyProtocolConfig
}

/**
 * TLS 1.2 suites offered by default: ECDHE key exchange (forward secrecy) with an AEAD cipher,
 * for ECDSA keys (what `certs init` issues) and RSA keys (what many bring). No CBC suite: their
 * MAC-then-encrypt construction is what Lucky13 attacks. No RSA key exchange: it has no forward
 * secrecy. Mozilla's "intermediate" order, without its DHE suites.
 */
export const DEFAULT_TLS_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305'
].join(':')

export type CertificateIdentity = 'none' | 'cn' | 'subject' | 'bound'

export interface TcpListenerConfig {
  readonly type: 'tcp'
  readonly host: string
  readonly port: number
  readonly proxyProtocol?: ProxyProtocolConfig
}

/** MQTT over WebSockets over TLS: the TLS listener's keys and the HTTP upgrade's. */
export interface WssListenerConfig extends Omit<TlsListenerConfig, 'type' | 'proxyProtocol'> {
  readonly type: 'wss'
  /** The only HTTP path upgraded; default /mqtt. */
  readonly path: string
  /** Browser Origins allowed; a request with another Origin is refused, one without any is let in. */
  readonly origins: readonly string[]
}

export type ListenerConfig = TlsListenerConfig | TcpListenerConfig | WssListenerConfig

/** The legacy embedded store: one JSON file rewritten per change (kept working; migrate to sqlite). */
export interface FileStoreConfig { readonly type: 'file'; readonly path: string }

/** The embedded store: a SQLite database (WAL) with the same users table as the MySQL store. */
export interface SqliteStoreConfig { readonly type: 'sqlite'; readonly path: string }

/** Column names of the users table; the defaults are those of existing deployments. */
export interface MysqlColumns {
  readonly username: string
  readonly password: string
  readonly totpSecret: string
  readonly enabled: string
  readonly lastStep: string
  readonly createdAt: string
}

export interface MysqlStoreConfig {
  readonly type: 'mysql'
  readonly host: string
  readonly port: number
  readonly user: string
  /** Resolved at load from `password`, `passwordFile` or `passwordEnv`; never logged. */
  readonly password?: string
  readonly database: string
  readonly table: string
  readonly columns: MysqlColumns
  /** TLS to the database: off, on with the system CAs, or on with a given CA file. */
  readonly tls?: { readonly ca?: string; readonly rejectUnauthorized: boolean }
  readonly poolSize: number
  /** Milliseconds to open a connection. */
  readonly connectTimeout: number
  /** Milliseconds one store call (a login's lookup, a step claim) may take in all. */
  readonly queryTimeout: number
  /** Seconds a found user may be served from memory; 0 (default) asks the database every time. */
  readonly cacheTtl: number
}

/** A Mosquitto 2.x password_file (`user:$7$...` / `user:$6$...`), read-only here. */
export interface MosquittoPasswdStoreConfig {
  readonly type: 'mosquitto-passwd'
  readonly path: string
  /** Optional `user:BASE32` lines: TOTP secrets for users of the password file. */
  readonly totpFile?: string
}

/** A remote auth service speaking mosquitto-go-auth's HTTP backend contract. */
export interface HttpBackendConfig {
  readonly type: 'http'
  /** Base URL, http: or https:. */
  readonly url: string
  readonly userPath: string
  readonly aclPath: string
  readonly paramsMode: 'json' | 'form'
  readonly responseMode: 'json' | 'status' | 'text'
  /** Milliseconds one request may take; past it the backend counts as unavailable. */
  readonly timeout: number
  /** Seconds a positive answer is reused; 0 (default) asks every time. */
  readonly cacheTtl: number
  /** CA file for an https backend. */
  readonly ca?: string
}

export type StoreConfig = SqliteStoreConfig | FileStoreConfig | MysqlStoreConfig | MosquittoPasswdStoreConfig | HttpBackendConfig
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

function listener (value: unknown, i: number, base: string): ListenerConfig {
  const path = `listeners[${i}]`
  const type = (value as Raw | null)?.type
  if (type === 'tcp') {
    const raw = object(value, path, ['type', 'host', 'port', 'proxyProtocol'])
    const proxyProtocol = parseProxyProtocol(raw.proxyProtocol, `${path}.proxyProtocol`)
    // A plain listener carries passwords in clear text: loopback unless the operator says otherwise.
    return Object.freeze({ type, host: host(raw, `${path}.host`, '127.0.0.1'), port: int(raw, 'port', `${path}.port`, 1883, 0, 65535), ...(proxyProtocol === undefined ? {} : { proxyProtocol }) })
  }
  if (type === 'wss') {
    // 8884: the port brokers commonly give MQTT over secure WebSockets.
    const tls = tlsListener(value, path, base, ['path', 'origins'], 8884)
    return Object.freeze({ ...tls, type, path: wsPath(value as Raw, `${path}.path`), origins: origins(value as Raw, `${path}.origins`) })
  }
  if (type !== undefined && type !== 'tls') fail(`${path}.type`, 'must be tls, tcp or wss')
  const tls = tlsListener(value, path, base, ['proxyProtocol'])
  const proxyProtocol = parseProxyProtocol((value as Raw | null)?.proxyProtocol, `${path}.proxyProtocol`)
  return proxyProtocol === undefined ? tls : Object.freeze({ ...tls, proxyProtocol })
}

/**
 * An OpenSSL cipher string, checked by OpenSSL itself: a list it rejects as a whole would fail
 * at start, and a name it does not know inside a list would be dropped without a word (a typo
 * in a suite added on purpose is then a mystery refusal in the field).
 */
function cipherString (raw: Raw, path: string, minVersion: TlsVersion): string {
  const ciphers = str(raw, 'ciphers', path, DEFAULT_TLS_CIPHERS)
  const accepts = (list: string): string | undefined => {
    try {
      createSecureContext({ ciphers: list, minVersion })
      return undefined
    } catch (err) {
      return (err as Error).message.split('\n')[0]
    }
  }
  const whole = accepts(ciphers)
  if (whole !== undefined) fail(path, `OpenSSL accepts no cipher in "${ciphers}" (${whole})`)
  // OpenSSL splits on : , and space; !X, -X, +X and @STRENGTH / @SECLEVEL=n are operators.
  for (const name of ciphers.split(/[:, ]+/)) {
    if (name === '' || /^[!+@-]/.test(name)) continue
    if (accepts(name) !== undefined) fail(path, `OpenSSL knows no cipher "${name}" (see \`openssl ciphers -v\`)`)
  }
  return ciphers
}

function tlsListener (value: unknown, path: string, base: string, extraKeys: readonly string[] = [], defaultPort = 8883): TlsListenerConfig {
  const raw = object(value, path, ['type', 'host', 'port', 'cert', 'key', 'ca', 'minVersion', 'ciphers', 'requireClientCertificate', 'useIdentityAsUsername', 'useSubjectAsUsername', 'bindCertificate', 'crl', ...extraKeys])
  const minVersion = oneOf<TlsVersion>(raw, 'minVersion', `${path}.minVersion`, 'TLSv1.2', ['TLSv1.2', 'TLSv1.3'])
  const requireClientCertificate = bool(raw, 'requireClientCertificate', `${path}.requireClientCertificate`, false)
  const ca = raw.ca === undefined ? undefined : resolve(base, str(raw, 'ca', `${path}.ca`))
  if (requireClientCertificate && ca === undefined) fail(`${path}.ca`, 'is required when requireClientCertificate is true')
  const modes = ([['useIdentityAsUsername', 'cn'], ['useSubjectAsUsername', 'subject'], ['bindCertificate', 'bound']] as const)
    .filter(([k]) => bool(raw, k, `${path}.${k}`, false))
  if (modes.length > 1) fail(path, `give at most one of useIdentityAsUsername, useSubjectAsUsername, bindCertificate (got ${modes.map(([k]) => k).join(', ')})`)
  const mode = modes[0]
  if (mode !== undefined && !requireClientCertificate) fail(`${path}.${mode[0]}`, 'needs requireClientCertificate: true')
  const crl = raw.crl === undefined ? undefined : resolve(base, str(raw, 'crl', `${path}.crl`))
  if (crl !== undefined && !requireClientCertificate) fail(`${path}.crl`, 'needs requireClientCertificate: true (only client certificates are checked against it)')
  return Object.freeze({
    type: 'tls',
    host: host(raw, `${path}.host`, '0.0.0.0'),
    port: int(raw, 'port', `${path}.port`, defaultPort, 0, 65535),
    cert: resolve(base, str(raw, 'cert', `${path}.cert`, 'certs/server.crt')),
    key: resolve(base, str(raw, 'key', `${path}.key`, 'certs/server.key')),
    ...(ca === undefined ? {} : { ca }),
    minVersion,
    ciphers: cipherString(raw, `${path}.ciphers`, minVersion),
    requireClientCertificate,
    certificateIdentity: mode?.[1] ?? 'none',
    ...(crl === undefined ? {} : { crl })
  })
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/
const COLUMN_DEFAULTS: MysqlColumns = { username: 'username', password: 'password', totpSecret: 'totp_secret', enabled: 'enabled', lastStep: 'last_step', createdAt: 'created_at' }

function identifier (raw: Raw, key: string, path: string, def: string): string {
  const v = str(raw, key, path, def)
  if (!IDENTIFIER.test(v)) fail(path, `"${v}" is not a plain SQL identifier (letters, digits, _)`)
  return v
}

function mysqlStore (raw: Raw, base: string, env: NodeJS.ProcessEnv): MysqlStoreConfig {
  const p = 'auth.store'
  // A URL gives defaults for the discrete keys; a discrete key wins over the URL.
  let fromUrl: Raw = {}
  if (raw.url !== undefined) {
    const text = str(raw, 'url', `${p}.url`)
    let u: URL
    try {
      u = new URL(text)
    } catch {
      fail(`${p}.url`, 'is not a URL (expected mysql://user:password@host:port/database)')
    }
    if (u.protocol !== 'mysql:' && u.protocol !== 'mariadb:') fail(`${p}.url`, 'must start with mysql://')
    fromUrl = {
      host: u.hostname === '' ? undefined : u.hostname.replace(/^\[|\]$/g, ''),
      port: u.port === '' ? undefined : Number(u.port),
      user: u.username === '' ? undefined : decodeURIComponent(u.username),
      password: u.password === '' ? undefined : decodeURIComponent(u.password),
      database: u.pathname.length > 1 ? decodeURIComponent(u.pathname.slice(1)) : undefined
    }
  }
  const merged: Raw = { ...Object.fromEntries(Object.entries(fromUrl).filter(([, v]) => v !== undefined)), ...raw }
  const sources = ['password', 'passwordFile', 'passwordEnv'].filter((k) => raw[k] !== undefined)
  if (sources.length > 1) fail(p, `give one of password, passwordFile, passwordEnv (got ${sources.join(', ')})`)
  let password = typeof merged.password === 'string' ? merged.password : undefined
  if (raw.passwordFile !== undefined) {
    const file = resolve(base, str(raw, 'passwordFile', `${p}.passwordFile`))
    try {
      password = readFileSync(file, 'utf8').replace(/\r?\n$/, '')
    } catch (err) {
      fail(`${p}.passwordFile`, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
    }
  }
  if (raw.passwordEnv !== undefined) {
    const name = str(raw, 'passwordEnv', `${p}.passwordEnv`)
    password = env[name]
    if (password === undefined) fail(`${p}.passwordEnv`, `environment variable ${name} is not set`)
  }
  const cols = object(raw.columns, `${p}.columns`, Object.keys(COLUMN_DEFAULTS))
  const columns = Object.fromEntries(Object.entries(COLUMN_DEFAULTS).map(([k, d]) => [k, identifier(cols, k, `${p}.columns.${k}`, d)])) as unknown as MysqlColumns
  let tls: MysqlStoreConfig['tls']
  if (raw.tls === true) tls = { rejectUnauthorized: true }
  else if (raw.tls !== undefined && raw.tls !== false) {
    const t = object(raw.tls, `${p}.tls`, ['ca', 'rejectUnauthorized'])
    tls = {
      ...(t.ca === undefined ? {} : { ca: resolve(base, str(t, 'ca', `${p}.tls.ca`)) }),
      rejectUnauthorized: bool(t, 'rejectUnauthorized', `${p}.tls.rejectUnauthorized`, true)
    }
  }
  return Object.freeze({
    type: 'mysql',
    host: str(merged, 'host', `${p}.host`, '127.0.0.1'),
    port: int(merged, 'port', `${p}.port`, 3306, 1, 65535),
    user: str(merged, 'user', `${p}.user`),
    ...(password === undefined ? {} : { password }),
    database: str(merged, 'database', `${p}.database`),
    table: identifier(raw, 'table', `${p}.table`, 'users'),
    columns: Object.freeze(columns),
    ...(tls === undefined ? {} : { tls: Object.freeze(tls) }),
    poolSize: int(raw, 'poolSize', `${p}.poolSize`, 10, 1, 1000),
    connectTimeout: int(raw, 'connectTimeout', `${p}.connectTimeout`, 2000, 100, 60000),
    queryTimeout: int(raw, 'queryTimeout', `${p}.queryTimeout`, 2000, 100, 60000),
    cacheTtl: int(raw, 'cacheTtl', `${p}.cacheTtl`, 0, 0, 86400)
  })
}

const MYSQL_KEYS = ['type', 'url', 'host', 'port', 'user', 'password', 'passwordFile', 'passwordEnv', 'database', 'table', 'columns', 'tls', 'poolSize', 'connectTimeout', 'queryTimeout', 'cacheTtl']

const HTTP_KEYS = ['type', 'url', 'userPath', 'aclPath', 'paramsMode', 'responseMode', 'timeout', 'cacheTtl', 'ca']

function httpBackend (raw: Raw, base: string): HttpBackendConfig {
  const p = 'auth.store'
  const url = str(raw, 'url', `${p}.url`)
  let u: URL
  try {
    u = new URL(url)
  } catch {
    fail(`${p}.url`, 'is not a URL (expected http://host:port or https://host:port)')
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') fail(`${p}.url`, 'must start with http:// or https://')
  if (u.username !== '' || u.password !== '') fail(`${p}.url`, 'must not carry credentials')
  const path = (key: string, def: string): string => {
    const v = str(raw, key, `${p}.${key}`, def)
    if (!v.startsWith('/')) fail(`${p}.${key}`, 'must start with /')
    return v
  }
  return Object.freeze({
    type: 'http',
    url: url.replace(/\/+$/, ''),
    userPath: path('userPath', '/auth/user'),
    aclPath: path('aclPath', '/auth/acl'),
    paramsMode: oneOf(raw, 'paramsMode', `${p}.paramsMode`, 'json', ['json', 'form'] as const),
    responseMode: oneOf(raw, 'responseMode', `${p}.responseMode`, 'json', ['json', 'status', 'text'] as const),
    timeout: int(raw, 'timeout', `${p}.timeout`, 2000, 100, 60000),
    cacheTtl: int(raw, 'cacheTtl', `${p}.cacheTtl`, 0, 0, 86400),
    ...(raw.ca === undefined ? {} : { ca: resolve(base, str(raw, 'ca', `${p}.ca`)) })
  })
}

function store (value: unknown, base: string, env: NodeJS.ProcessEnv): StoreConfig {
  const type = (value as Raw | null)?.type ?? 'sqlite'
  if (type === 'mysql') return mysqlStore(object(value, 'auth.store', MYSQL_KEYS), base, env)
  if (type === 'http') return httpBackend(object(value, 'auth.store', HTTP_KEYS), base)
  if (type === 'mosquitto-passwd') {
    const raw = object(value, 'auth.store', ['type', 'path', 'totpFile'])
    return Object.freeze({
      type,
      path: resolve(base, str(raw, 'path', 'auth.store.path')),
      ...(raw.totpFile === undefined ? {} : { totpFile: resolve(base, str(raw, 'totpFile', 'auth.store.totpFile')) })
    })
  }
  if (type !== 'file' && type !== 'sqlite') fail('auth.store.type', 'must be sqlite, file, mysql, mosquitto-passwd or http')
  const raw = object(value, 'auth.store', ['type', 'path'])
  return Object.freeze({ type, path: resolve(base, str(raw, 'path', 'auth.store.path', type === 'sqlite' ? 'data/users.db' : 'data/users.json')) })
}

/**
 * Whether logins carry a TOTP code. The file and MySQL stores are two-factor by design; a
 * Mosquitto password file is password-only unless a TOTP file gives secrets and this is on;
 * an HTTP backend checks whatever it checks itself.
 */
function totpRequired (totp: Raw, s: StoreConfig): boolean {
  const given = totp.required
  if (given !== undefined && typeof given !== 'boolean') fail('auth.totp.required', 'must be true or false')
  switch (s.type) {
    case 'sqlite':
    case 'file':
    case 'mysql':
      if (given === false) fail('auth.totp.required', `the ${s.type} store always requires a TOTP code (use mosquitto-passwd for password-only users)`)
      return true
    case 'mosquitto-passwd':
      if (given === true && s.totpFile === undefined) fail('auth.totp.required', 'needs auth.store.totpFile (the users\' TOTP secrets) with the mosquitto-passwd store')
      return given ?? false
    case 'http':
      if (given !== undefined) fail('auth.totp.required', 'does not apply to the http store: the backend checks the whole username and password')
      return false
  }
}

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
  return JSON.parse(JSON.stringify(config, function (this: unknown, key, value: unknown) {
    return key === 'password' && this !== (config.auth.store as { columns?: unknown }).columns ? '[redacted]' : value
  }))
}
