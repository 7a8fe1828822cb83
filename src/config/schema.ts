import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { resolve } from 'node:path'
import { BastionError } from '../errors.js'

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
}

export interface TcpListenerConfig {
  readonly type: 'tcp'
  readonly host: string
  readonly port: number
}

export type ListenerConfig = TlsListenerConfig | TcpListenerConfig

export interface FileStoreConfig { readonly type: 'file'; readonly path: string }

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

export type StoreConfig = FileStoreConfig | MysqlStoreConfig

export interface BastionConfig {
  readonly listeners: readonly ListenerConfig[]
  readonly auth: {
    readonly store: StoreConfig
    readonly totp: { readonly window: number; readonly replayProtection: boolean }
    /** Worker threads for bcrypt; 0 means one per CPU core, at most 4. */
    readonly workers: number
  }
  readonly acl: {
    readonly policy: 'metrics'
    readonly metrics: { readonly prefix: string; readonly leaves: readonly string[] }
  }
  readonly sessions: { readonly maxExpiry: number }
  readonly will: { readonly serverWill: boolean }
  readonly log: { readonly level: LogLevel }
  /** Generate a development CA and server certificate when a TLS listener's files are missing. */
  readonly devCertificates: boolean
}

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

/** A leaf or prefix is one topic level: no separators, wildcards, `$` or NUL. */
const TOPIC_LEVEL = /^[^/+#$\u0000]+$/

type Raw = Record<string, unknown>

function fail (key: string, message: string): never {
  throw new BastionError('BASTION_ERR_CONFIG', `config ${key}: ${message}`)
}

function object (value: unknown, key: string, allowed: readonly string[]): Raw {
  if (value === undefined || value === null) return {}
  if (typeof value !== 'object' || Array.isArray(value)) fail(key, 'must be a mapping')
  for (const k of Object.keys(value)) {
    if (!allowed.includes(k)) fail(key === '' ? k : `${key}.${k}`, `unknown key (allowed: ${allowed.join(', ')})`)
  }
  return value as Raw
}

function str (raw: Raw, key: string, path: string, def?: string): string {
  const v = raw[key] ?? def
  if (typeof v !== 'string' || v.length === 0) fail(path, 'must be a non-empty string')
  return v
}

function bool (raw: Raw, key: string, path: string, def: boolean): boolean {
  const v = raw[key] ?? def
  if (typeof v !== 'boolean') fail(path, 'must be true or false')
  return v
}

function int (raw: Raw, key: string, path: string, def: number, min: number, max: number): number {
  const v = raw[key] ?? def
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(path, `must be an integer from ${min} to ${max}`)
  }
  return v
}

function oneOf<T extends string> (raw: Raw, key: string, path: string, def: T, allowed: readonly T[]): T {
  const v = raw[key] ?? def
  if (typeof v !== 'string' || !allowed.includes(v as T)) fail(path, `must be one of ${allowed.join(', ')}`)
  return v as T
}

function host (raw: Raw, path: string, def: string): string {
  const h = str(raw, 'host', path, def)
  if (isIP(h) === 0 && !/^[A-Za-z0-9.-]{1,253}$/.test(h)) fail(path, `"${h}" is not an IP address or host name`)
  return h
}

function listener (value: unknown, i: number, base: string): ListenerConfig {
  const path = `listeners[${i}]`
  const type = (value as Raw | null)?.type
  if (type === 'tcp') {
    const raw = object(value, path, ['type', 'host', 'port'])
    // A plain listener carries passwords in clear text: loopback unless the operator says otherwise.
    return Object.freeze({ type, host: host(raw, `${path}.host`, '127.0.0.1'), port: int(raw, 'port', `${path}.port`, 1883, 0, 65535) })
  }
  if (type !== undefined && type !== 'tls') fail(`${path}.type`, 'must be tls or tcp')
  const raw = object(value, path, ['type', 'host', 'port', 'cert', 'key', 'ca', 'minVersion', 'requireClientCertificate'])
  const requireClientCertificate = bool(raw, 'requireClientCertificate', `${path}.requireClientCertificate`, false)
  const ca = raw.ca === undefined ? undefined : resolve(base, str(raw, 'ca', `${path}.ca`))
  if (requireClientCertificate && ca === undefined) fail(`${path}.ca`, 'is required when requireClientCertificate is true')
  return Object.freeze({
    type: 'tls',
    host: host(raw, `${path}.host`, '0.0.0.0'),
    port: int(raw, 'port', `${path}.port`, 8883, 0, 65535),
    cert: resolve(base, str(raw, 'cert', `${path}.cert`, 'certs/server.crt')),
    key: resolve(base, str(raw, 'key', `${path}.key`, 'certs/server.key')),
    ...(ca === undefined ? {} : { ca }),
    minVersion: oneOf<TlsVersion>(raw, 'minVersion', `${path}.minVersion`, 'TLSv1.2', ['TLSv1.2', 'TLSv1.3']),
    requireClientCertificate
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

function store (value: unknown, base: string, env: NodeJS.ProcessEnv): StoreConfig {
  const type = (value as Raw | null)?.type ?? 'file'
  if (type === 'mysql') return mysqlStore(object(value, 'auth.store', MYSQL_KEYS), base, env)
  if (type !== 'file') fail('auth.store.type', 'must be file or mysql')
  const raw = object(value, 'auth.store', ['type', 'path'])
  return Object.freeze({ type: 'file', path: resolve(base, str(raw, 'path', 'auth.store.path', 'data/users.json')) })
}

/**
 * Validates a raw config document (already parsed from YAML) into a frozen BastionConfig.
 * Relative paths resolve against `base` (the config file's folder, or the working directory).
 * Unknown keys are errors: a typo must never silently fall back to a default.
 */
export function parseConfig (doc: unknown, base: string, opts: { devCertificates?: boolean; env?: NodeJS.ProcessEnv } = {}): BastionConfig {
  const root = object(doc, '', ['listeners', 'auth', 'acl', 'sessions', 'will', 'log', 'devCertificates'])

  const rawListeners = root.listeners ?? [{ type: 'tls' }]
  if (!Array.isArray(rawListeners) || rawListeners.length === 0) fail('listeners', 'must be a non-empty list')
  const listeners = rawListeners.map((l, i) => listener(l, i, base))
  if (!listeners.some((l) => l.type === 'tls')) fail('listeners', 'needs at least one tls listener')

  const auth = object(root.auth, 'auth', ['store', 'totp', 'workers'])
  const totp = object(auth.totp, 'auth.totp', ['window', 'replayProtection'])
  const acl = object(root.acl, 'acl', ['policy', 'metrics'])
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

  return Object.freeze({
    listeners: Object.freeze(listeners),
    auth: Object.freeze({
      store: store(auth.store, base, opts.env ?? {}),
      totp: Object.freeze({
        window: int(totp, 'window', 'auth.totp.window', 1, 0, 10),
        replayProtection: bool(totp, 'replayProtection', 'auth.totp.replayProtection', true)
      }),
      workers: int(auth, 'workers', 'auth.workers', 0, 0, 64)
    }),
    acl: Object.freeze({
      policy: oneOf(acl, 'policy', 'acl.policy', 'metrics', ['metrics'] as const),
      metrics: Object.freeze({ prefix, leaves: Object.freeze([...leaves as string[]]) })
    }),
    sessions: Object.freeze({ maxExpiry: int(sessions, 'maxExpiry', 'sessions.maxExpiry', 0, 0, 0xFFFFFFFF) }),
    will: Object.freeze({ serverWill: bool(will, 'serverWill', 'will.serverWill', true) }),
    log: Object.freeze({ level: oneOf(log, 'level', 'log.level', 'info', LOG_LEVELS) }),
    devCertificates: bool(root, 'devCertificates', 'devCertificates', opts.devCertificates ?? false)
  })
}

/** The config as JSON with every secret blanked, for `config check` and logs. */
export function redactedConfig (config: BastionConfig): unknown {
  return JSON.parse(JSON.stringify(config, (key, value: unknown) => (key === 'password' ? '[redacted]' : value)))
}
