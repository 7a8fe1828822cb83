// The `auth.store` key: where users live (sqlite, the legacy JSON file, MySQL, a Mosquitto
// password file, an HTTP backend), validated into typed store configs.
import { resolve } from 'node:path'
import { bool, fail, int, object, oneOf, secret, str, type Raw } from './fields.js'

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
  // Given in the store's keys, or else in the URL.
  const password = secret(raw, p, base, env) ?? (typeof fromUrl.password === 'string' ? fromUrl.password : undefined)
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

export function store (value: unknown, base: string, env: NodeJS.ProcessEnv): StoreConfig {
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
export function totpRequired (totp: Raw, s: StoreConfig): boolean {
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
