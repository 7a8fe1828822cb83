// The `cluster` key: several brokers sharing routing and sessions through one Redis
// (docs/cluster.md). Absent, the broker is a single node exactly as before.
import { readFileSync } from 'node:fs'
import { availableParallelism, hostname } from 'node:os'
import { resolve } from 'node:path'
import { fail, host, int, object, str, type Raw } from './fields.js'

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

/** `--workers` and `cluster.workers`: a whole number of processes, or `auto` (one per core). */
export function parseWorkers (value: unknown, where: string): number {
  if (value === 'auto') return Math.min(MAX_WORKERS, availableParallelism())
  const n = typeof value === 'string' && /^[0-9]+$/.test(value) ? Number(value) : value
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1 || n > MAX_WORKERS) {
    fail(where, `must be a whole number from 1 to ${MAX_WORKERS} or auto, got ${JSON.stringify(value)}`)
  }
  return n
}

const REDIS_KEYS = ['host', 'port', 'username', 'password', 'passwordFile', 'passwordEnv', 'db', 'keyPrefix', 'connectTimeout']

/** hostname-pid, with what a host name may carry that a node id may not made '-'. */
export function defaultNodeId (): string {
  return `${hostname().replace(/[^A-Za-z0-9._-]/g, '-').slice(0, 50)}-${process.pid}`
}

function password (raw: Raw, base: string, env: NodeJS.ProcessEnv): string | undefined {
  const p = 'cluster.redis'
  const sources = ['password', 'passwordFile', 'passwordEnv'].filter((k) => raw[k] !== undefined)
  if (sources.length > 1) fail(p, `give one of password, passwordFile, passwordEnv (got ${sources.join(', ')})`)
  if (raw.password !== undefined) return str(raw, 'password', `${p}.password`)
  if (raw.passwordFile !== undefined) {
    const file = resolve(base, str(raw, 'passwordFile', `${p}.passwordFile`))
    try {
      return readFileSync(file, 'utf8').replace(/\r?\n$/, '')
    } catch (err) {
      fail(`${p}.passwordFile`, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
    }
  }
  if (raw.passwordEnv !== undefined) {
    const name = str(raw, 'passwordEnv', `${p}.passwordEnv`)
    const value = env[name]
    if (value === undefined) fail(`${p}.passwordEnv`, `environment variable ${name} is not set`)
    return value
  }
  return undefined
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
  const pw = password(redis, base, env)
  return Object.freeze({
    nodeId,
    // 5 s: a crashed node's wills 15-20 s after its last heartbeat (aedes' 60 s made that 3-7
    // minutes), for one small PUBLISH per node every 5 s; at least 1 s, so that a GC pause or a
    // busy event loop is not taken for a crash; at most 300 s.
    heartbeatInterval: int(raw, 'heartbeatInterval', 'cluster.heartbeatInterval', 5, 1, 300),
    workers: raw.workers === undefined ? 1 : parseWorkers(raw.workers, 'cluster.workers'),
    redis: Object.freeze({
      host: host(redis, 'cluster.redis.host', '127.0.0.1'),
      port: int(redis, 'port', 'cluster.redis.port', 6379, 1, 65535),
      ...(redis.username === undefined ? {} : { username: str(redis, 'username', 'cluster.redis.username') }),
      ...(pw === undefined ? {} : { password: pw }),
      db: int(redis, 'db', 'cluster.redis.db', 0, 0, 15),
      keyPrefix,
      connectTimeout: int(redis, 'connectTimeout', 'cluster.redis.connectTimeout', 5000, 100, 60000)
    })
  })
}
