// The `cluster` key: several brokers sharing routing and sessions through one Redis
// (docs/cluster.md). Absent, the broker is a single node exactly as before.
import { createPrivateKey, X509Certificate, type KeyObject } from 'node:crypto'
import { isIP } from 'node:net'
import { availableParallelism, hostname } from 'node:os'
import { fail, host, int, object, readNamedFile, secret, str, type Raw } from './fields.js'

export interface RedisConfig {
  readonly host: string
  readonly port: number
  /** Redis 6 ACL user; without it the password is the `requirepass` one. */
  readonly username?: string
  /** Resolved at load from `password`, `passwordFile` or `passwordEnv`; never logged. */
  readonly password?: string
  /** Database index of the persistence keys (pub/sub is global to a server: see keyPrefix). */
  readonly db: number
  /** Put before every key and pub/sub channel, so deployments can share one Redis. */
  readonly keyPrefix: string
  /** Milliseconds to open a connection; also bounds the start-up check. */
  readonly connectTimeout: number
  /** Absent: plaintext. Redis' certificate is always verified. */
  readonly tls?: RedisTlsConfig
}

/** `cluster.redis.tls`, files read at load. Empty: TLS verified against the system's CAs. */
export interface RedisTlsConfig {
  /** PEM CAs that may sign Redis' certificate, instead of the system's. */
  readonly ca?: string
  /** PEM client certificate and key, for a Redis with `tls-auth-clients`. The key is a secret. */
  readonly cert?: string
  readonly key?: string
  /** The DNS name Redis' certificate is checked against (and sent as SNI) instead of `host`. */
  readonly servername?: string
  /** Where ca, cert and key were read from: what config check shows instead of their contents. */
  readonly files: { readonly ca?: string; readonly cert?: string; readonly key?: string }
}

export interface ClusterConfig {
  /** This node's name in logs, and the first part of its aedes broker id. */
  readonly nodeId: string
  readonly redis: RedisConfig
  /**
   * Broker processes `start` runs on this host (node:cluster workers sharing the listening
   * ports; docs/cluster.md). `auto` is resolved here to the number of cores.
   */
  readonly workers: number
  /**
   * Seconds between the `$SYS/<brokerId>/heartbeat` messages of each node (aedes'
   * heartbeatInterval); a node silent for 3 of them is dead and its wills are published.
   */
  readonly heartbeatInterval: number
}

// aedes-persistence-redis splits its keys on ':' to find the broker id in them, and aedes puts
// the broker id in `$SYS/<id>/...` topics: letters, digits, '.', '_' and '-' only.
const NODE_ID = /^[A-Za-z0-9._-]{1,64}$/
// The prefix also starts Redis PSUBSCRIBE patterns: no glob characters (* ? [ ] \).
const KEY_PREFIX = /^[A-Za-z0-9._:-]{1,64}$/

/** Workers are whole broker processes; past this a host needs more RAM than cores help. */
export const MAX_WORKERS = 128

/**
 * `--workers` and `cluster.workers`: a whole number of processes, or `auto` (one per core).
 * Undefined when it is neither; WORKERS_EXPECTED says what is.
 */
export function workersValue (value: unknown): number | undefined {
  if (value === 'auto') return Math.min(MAX_WORKERS, availableParallelism())
  const n = typeof value === 'string' && /^[0-9]+$/.test(value) ? Number(value) : value
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= MAX_WORKERS ? n : undefined
}
export const WORKERS_EXPECTED = `a whole number from 1 to ${MAX_WORKERS} or auto`

const REDIS_KEYS = ['host', 'port', 'username', 'password', 'passwordFile', 'passwordEnv', 'db', 'keyPrefix', 'connectTimeout', 'tls']
const TLS_KEYS = ['ca', 'cert', 'key', 'servername']

/** hostname-pid, with what a host name may carry that a node id may not made '-'. */
export function defaultNodeId (): string {
  return `${hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 50)}-${process.pid}`
}

/** One PEM file of `cluster.redis.tls`, resolved against the config's folder and read now. */
function pemFile (raw: Raw, key: 'ca' | 'cert' | 'key', base: string): { file: string; text: string } | undefined {
  return raw[key] === undefined ? undefined : readNamedFile(raw, key, `cluster.redis.tls.${key}`, base)
}

function certificate (pem: { file: string; text: string }, path: string): X509Certificate {
  try {
    return new X509Certificate(pem.text)
  } catch {
    fail(path, `${pem.file} is not a PEM certificate`)
  }
}

/**
 * false or absent: plaintext; true: TLS verified against the system's CAs; a mapping: its files.
 * There is no way to turn verification off: a Redis that cannot prove its name is not one.
 */
function parseTls (value: unknown, base: string): RedisTlsConfig | undefined {
  const p = 'cluster.redis.tls'
  if (value === undefined || value === false) return undefined
  if (value === true) return Object.freeze({ files: Object.freeze({}) })
  if (value === null || typeof value !== 'object' || Array.isArray(value)) fail(p, 'must be true, false or a mapping { ca, cert, key, servername }')
  const raw = object(value, p, TLS_KEYS)
  if ((raw.cert === undefined) !== (raw.key === undefined)) {
    fail(p, `give cert and key together (got only ${raw.cert === undefined ? 'key' : 'cert'}): the client certificate and its private key`)
  }
  let servername: string | undefined
  if (raw.servername !== undefined) {
    servername = str(raw, 'servername', `${p}.servername`)
    // RFC 6066 SNI carries DNS names only; an IP address in Redis' certificate is checked against host.
    if (isIP(servername) !== 0 || !/^[A-Za-z0-9.-]{1,253}$/.test(servername)) fail(`${p}.servername`, `"${servername}" is not a DNS name (an IP address is checked against host)`)
  }
  const ca = pemFile(raw, 'ca', base)
  if (ca !== undefined) certificate(ca, `${p}.ca`)
  const cert = pemFile(raw, 'cert', base)
  const key = pemFile(raw, 'key', base)
  if (cert !== undefined && key !== undefined) {
    const leaf = certificate(cert, `${p}.cert`)
    let pair: KeyObject
    try {
      pair = createPrivateKey(key.text)
    } catch (err) {
      const encrypted = (err as NodeJS.ErrnoException).code === 'ERR_MISSING_PASSPHRASE'
      fail(`${p}.key`, `${key.file} is not a PEM private key${encrypted ? ' without a passphrase (it is encrypted)' : ''}`)
    }
    if (!leaf.checkPrivateKey(pair)) fail(`${p}.key`, `${key.file} is not the private key of the certificate in ${cert.file}`)
  }
  return Object.freeze({
    ...(ca === undefined ? {} : { ca: ca.text }),
    ...(cert === undefined ? {} : { cert: cert.text }),
    ...(key === undefined ? {} : { key: key.text }),
    ...(servername === undefined ? {} : { servername }),
    files: Object.freeze({
      ...(ca === undefined ? {} : { ca: ca.file }),
      ...(cert === undefined ? {} : { cert: cert.file }),
      ...(key === undefined ? {} : { key: key.file })
    })
  })
}

/** `cluster.redis.tls` as config check shows it: file names, never their contents. */
export function shownTls (tls: RedisTlsConfig): unknown {
  const shown = { ...tls.files, ...(tls.servername === undefined ? {} : { servername: tls.servername }) }
  return Object.keys(shown).length === 0 ? true : shown
}

/** undefined without the key: a single node. */
export function parseCluster (value: unknown, base: string, env: NodeJS.ProcessEnv): ClusterConfig | undefined {
  if (value === undefined) return undefined
  if (value === null) fail('cluster', 'must be a mapping with redis: { host, port }')
  const raw = object(value, 'cluster', ['nodeId', 'redis', 'workers', 'heartbeatInterval'])
  if (raw.redis === undefined || raw.redis === null) fail('cluster.redis', 'is required: where the nodes meet, e.g. { host: 10.0.0.4, port: 6379 }')
  const redis = object(raw.redis, 'cluster.redis', REDIS_KEYS)
  const nodeId = raw.nodeId === undefined ? defaultNodeId() : str(raw, 'nodeId', 'cluster.nodeId')
  if (!NODE_ID.test(nodeId)) fail('cluster.nodeId', `"${nodeId}" may hold only letters, digits, . _ - (at most 64)`)
  const keyPrefix = str(redis, 'keyPrefix', 'cluster.redis.keyPrefix', 'bastion:')
  if (!KEY_PREFIX.test(keyPrefix)) fail('cluster.redis.keyPrefix', `"${keyPrefix}" may hold only letters, digits, . _ : - (at most 64)`)
  const pw = secret(redis, 'cluster.redis', base, env)
  const tls = parseTls(redis.tls, base)
  return Object.freeze({
    nodeId,
    // 5 s: a crashed node's wills 15-20 s after its last heartbeat (aedes' 60 s made that 3-7
    // minutes), for one small PUBLISH per node every 5 s; at least 1 s, so that a GC pause or a
    // busy event loop is not taken for a crash; at most 300 s.
    heartbeatInterval: int(raw, 'heartbeatInterval', 'cluster.heartbeatInterval', 5, 1, 300),
    workers: raw.workers === undefined ? 1 : workersValue(raw.workers) ?? fail('cluster.workers', `must be ${WORKERS_EXPECTED}, got ${JSON.stringify(raw.workers)}`),
    redis: Object.freeze({
      host: host(redis, 'cluster.redis.host', '127.0.0.1'),
      port: int(redis, 'port', 'cluster.redis.port', 6379, 1, 65535),
      ...(redis.username === undefined ? {} : { username: str(redis, 'username', 'cluster.redis.username') }),
      ...(pw === undefined ? {} : { password: pw }),
      db: int(redis, 'db', 'cluster.redis.db', 0, 0, 15),
      keyPrefix,
      connectTimeout: int(redis, 'connectTimeout', 'cluster.redis.connectTimeout', 5000, 100, 60000),
      ...(tls === undefined ? {} : { tls })
    })
  })
}
