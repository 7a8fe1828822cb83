// The `cluster` key: several brokers sharing routing and sessions through one Redis
// (docs/cluster.md). Absent, the broker is a single node exactly as before.
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
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
}

// aedes-persistence-redis splits its keys on ':' to find the broker id in them, and aedes puts
// the broker id in `$SYS/<id>/...` topics: letters, digits, '.', '_' and '-' only.
const NODE_ID = /^[A-Za-z0-9._-]{1,64}$/
// The prefix also starts Redis PSUBSCRIBE patterns: no glob characters (* ? [ ] \).
const KEY_PREFIX = /^[A-Za-z0-9._:-]{1,64}$/

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
  const raw = object(value, 'cluster', ['nodeId', 'redis'])
  if (raw.redis === undefined || raw.redis === null) fail('cluster.redis', 'is required: where the nodes meet, e.g. { host: 10.0.0.4, port: 6379 }')
  const redis = object(raw.redis, 'cluster.redis', REDIS_KEYS)
  const nodeId = raw.nodeId === undefined ? defaultNodeId() : str(raw, 'nodeId', 'cluster.nodeId')
  if (!NODE_ID.test(nodeId)) fail('cluster.nodeId', `"${nodeId}" may hold only letters, digits, . _ - (at most 64)`)
  const keyPrefix = str(redis, 'keyPrefix', 'cluster.redis.keyPrefix', 'bastion:')
  if (!KEY_PREFIX.test(keyPrefix)) fail('cluster.redis.keyPrefix', `"${keyPrefix}" may hold only letters, digits, . _ : - (at most 64)`)
  const pw = password(redis, base, env)
  return Object.freeze({
    nodeId,
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
