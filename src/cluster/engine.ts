// What aedes needs to run as one node of a cluster: message routing through Redis pub/sub
// (mqemitter-redis) and sessions, retained messages and wills in Redis (aedes-persistence-redis),
// both on connections made by cluster/redis.ts. docs/cluster.md says what is shared and what not.
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import type { Redis } from 'ioredis'
import type { ClusterConfig } from '../config/cluster.js'
import type { LockoutConfig } from '../config/hardening.js'
import type { EngineOptions } from '../engine/aedes.js'
import type { Logger } from '../log.js'
import { createRedisConnections, type RedisConnections } from './redis.js'
import { startClusterState, type ClusterState } from './state.js'
import { createWillSweeper, type WillSweeper } from './wills.js'

// Both packages are CommonJS, and the persistence ships no type declarations: typed here by
// what this module uses.
const require = createRequire(import.meta.url)
interface RedisEmitter {
  /** mqemitter-redis 7.2.1: channels whose messages it drops before decoding them (pinned). */
  readonly _ignoredTopicsSet: Set<string>
  readonly state: { on (event: 'error', listener: (err: Error) => void): void }
  close (cb: () => void): void
}
type RedisEmitterClass = new (prefix: string, opts: Record<string, unknown>) => RedisEmitter
const { MQEmitterRedisPrefix } = require('mqemitter-redis') as { MQEmitterRedisPrefix: RedisEmitterClass }
type RedisPersistence = Parameters<typeof createWillSweeper>[0]['persistence'] & { destroy (): Promise<void> }
const redisPersistence = require('aedes-persistence-redis') as (opts: { conn: Redis }) => RedisPersistence

export interface ClusterEngine {
  /** The aedes broker id: the node id and a random part new at every start. */
  readonly brokerId: string
  readonly redis: RedisConnections
  /** Our security state: client id holders and owners, lockout, revocation (cluster/state.ts). */
  readonly state: ClusterState
  /** Publishes the wills of crashed nodes once the broker is started (cluster/wills.ts). */
  readonly wills: WillSweeper
  /** id, mq, persistence and heartbeatInterval for Aedes.createBroker. */
  readonly options: Pick<EngineOptions, 'id' | 'mq' | 'persistence' | 'heartbeatInterval'>
  /** Releases the persistence and every Redis connection; call after the broker has closed. */
  close (): Promise<void>
}

// Bounds on the parts of shutdown that wait for Redis: a Redis that is down must not keep the
// process from exiting.
const EMITTER_CLOSE_MS = 1000
// auth.lockout's defaults, for an engine started without a broker config (tests).
const DEFAULT_LOCKOUT: LockoutConfig = { window: 900, maxFailuresPerUser: 10, maxFailuresPerIp: 50, duration: 60, maxDuration: 3600 }
const PERSISTENCE_CLOSE_MS = 1000

/**
 * Connects to Redis (rejecting within `cluster.redis.connectTimeout` with one line naming
 * host:port when it cannot) and builds the emitter and persistence on those connections.
 */
export async function startClusterEngine (config: ClusterConfig, log: Logger, lockout: LockoutConfig = DEFAULT_LOCKOUT): Promise<ClusterEngine> {
  const redis = createRedisConnections(config.redis, log)
  // Publishes and persistence writes come in bursts (a QoS 1 burst is a PUBLISH and a queue
  // write each): auto-pipelined. The subscriber connection only receives.
  const pub = redis.open('publish', { pipelined: true })
  const sub = redis.open('subscribe')
  const db = redis.open('persistence', { prefixed: true, pipelined: true })
  // aedes keys queued packets by broker id and a counter that restarts at 0, and a node's wills
  // by its broker id: a restarted node must not reuse either, so each start gets its own id.
  const brokerId = `${config.nodeId}.${randomBytes(4).toString('hex')}`
  let state: ClusterState
  try {
    await Promise.all([pub, sub, db].map(async (c) => await redis.ready(c)))
    state = await startClusterState(redis, config, lockout, brokerId, log)
  } catch (err) {
    await redis.close()
    throw err
  }
  // Pub/sub channels are global to a Redis server (not per db): the prefix keeps deployments
  // sharing one from receiving each other's messages and $SYS/<id>/new/clients takeovers.
  // concurrency and matchEmptyLevels as aedes sets them on its own in-memory emitter.
  const mq = new MQEmitterRedisPrefix(config.redis.keyPrefix, { subConn: sub, pubConn: pub, concurrency: 100, matchEmptyLevels: true })
  // mqemitter-redis re-emits connection errors here; without a listener they would throw.
  // The connections log them already (cluster/redis.ts).
  mq.state.on('error', () => {})
  // A subscription to '#' becomes PSUBSCRIBE '<prefix>*', which matches our channels too; their
  // messages are not MQTT packets for the emitter to decode.
  for (const channel of state.channels) mq._ignoredTopicsSet.add(channel)
  // It closes by QUIT and waits for both connections to end, which never happens while
  // Redis is unreachable: aedes' close() waits for this callback.
  const closeEmitter = mq.close.bind(mq)
  mq.close = (cb) => {
    let done = false
    const finish = (): void => { if (!done) { done = true; clearTimeout(timer); cb() } }
    const timer = setTimeout(() => { pub.disconnect(); sub.disconnect(); finish() }, EMITTER_CLOSE_MS)
    closeEmitter(finish)
  }
  const persistence = redisPersistence({ conn: db })
  const heartbeatMs = config.heartbeatInterval * 1000
  const wills = createWillSweeper({ persistence, db, brokerId, heartbeatMs, log })
  log.info({ event: 'cluster.joined', node: config.nodeId, brokerId, redis: redis.address, db: config.redis.db, keyPrefix: config.redis.keyPrefix },
    `cluster node ${brokerId} on Redis ${redis.address}`)

  let closing: Promise<void> | undefined
  return {
    brokerId,
    redis,
    state,
    wills,
    options: { id: brokerId, mq: mq as unknown as EngineOptions['mq'], persistence: persistence as unknown as EngineOptions['persistence'], heartbeatInterval: heartbeatMs },
    close () {
      closing ??= (async () => {
        state.close()
        let timer: NodeJS.Timeout | undefined
        // The broker has closed: its devices were told (0x8B) and no server will is owed for them.
        await Promise.race([wills.close(true).catch((err: Error) => log.warn({ event: 'will.server_entry_failed', reason: err.message }, 'server will entries of this node not deleted')),
          new Promise((resolve) => { timer = setTimeout(resolve, PERSISTENCE_CLOSE_MS) })])
        clearTimeout(timer)
        // Unsubscribes its subscription-sync topic and drops its connection (db); aedes' own
        // close() does not call it.
        await Promise.race([persistence.destroy().catch(() => {}), new Promise((resolve) => { timer = setTimeout(resolve, PERSISTENCE_CLOSE_MS) })])
        clearTimeout(timer)
        await redis.close()
      })()
      return closing
    }
  }
}
