// Our security state in the cluster's Redis (docs/cluster.md has the table): client id holders
// and owners, lockout counters, and the two pub/sub channels that tell the other nodes of a
// lockout or a revocation. Everything asked at a login goes over one fail-fast connection: a
// Redis that cannot answer is a fault (0x88), never what this node last knew.
import type { Redis } from 'ioredis'
import type { SharedHolders } from '../auth/sessions.js'
import type { LockoutScope, SharedLockout } from '../auth/lockout-keys.js'
import type { ClusterConfig } from '../config/cluster.js'
import type { LockoutConfig } from '../config/hardening.js'
import { BastionError } from '../errors.js'
import { createLogGate } from '../log-gate.js'
import type { Logger } from '../log.js'
import type { ClientIdOwners } from '../stores/store.js'
import { USERNAME_PATTERN } from '../types.js'
import { createRedisHolders } from './client-id-holders.js'
import { createRedisClientIds } from './client-id-owners.js'
import { createRedisLockout } from './lockout.js'
import type { RedisConnections } from './redis.js'

export interface ClusterState {
  readonly holders: SharedHolders
  readonly owners: ClientIdOwners
  readonly lockout: SharedLockout
  /** Tells every node (this one too) to re-check `user`'s live sessions now. */
  revoke (user: string): Promise<void>
  /** What to do when told so; `user` is a well-formed user name. */
  onRevoke (listener: (user: string) => void): void
  /**
   * Called once per outage when Redis has not answered for `connectTimeout`: from then on
   * nothing can be routed (a QoS 1/2 PUBLISH goes unanswered, a QoS 0 one may be lost).
   */
  onOutage (listener: () => void): void
  /** The pub/sub channels used here: the MQTT emitter must ignore them (cluster/engine.ts). */
  readonly channels: readonly string[]
  /** Stops watching for outages (before the connections are closed). */
  close (): void
}

const SCOPES = new Set<string>(['user', 'ip', 'user_ip'])
// What a lockout message may carry: the local tables' keys are far shorter.
const MAX_KEY_LENGTH = 200

/** Channel names of a deployment: under its prefix, beside the MQTT topics' (never a valid MQTT topic match: see engine.ts). */
export function stateChannels (keyPrefix: string): { revoke: string; lockout: string } {
  return { revoke: `${keyPrefix}$bastion/revoke`, lockout: `${keyPrefix}$bastion/lockout` }
}

/** Opens the state's two connections on `redis` (closed with it) and checks that they answer. */
export async function startClusterState (redis: RedisConnections, config: ClusterConfig, lockoutConfig: LockoutConfig, brokerId: string, log: Logger): Promise<ClusterState> {
  const conn: Redis = redis.open('state', { failFast: true })
  const events: Redis = redis.open('events')
  await Promise.all([conn, events].map(async (c) => await redis.ready(c)))
  const { keyPrefix } = config.redis
  const channels = stateChannels(keyPrefix)
  // One line a minute while Redis cannot answer logins: each refused login is logged too
  // (login.failed backend_unavailable, gated per address).
  const gate = createLogGate({ windowMs: 60_000 })
  const fault = (err: unknown): Error => {
    const reason = (err as Error).message
    const open = gate.pass('cluster.unavailable')
    if (open !== undefined) {
      log.warn({ event: 'cluster.unavailable', redis: redis.address, reason, ...(open.suppressed > 0 ? { suppressed: open.suppressed } : {}) },
        `Redis at ${redis.address} cannot answer for the cluster's security state: logins are refused (0x88)`)
    }
    return new BastionError('BASTION_ERR_BACKEND_UNAVAILABLE', `cluster state unavailable: ${reason}`, { cause: err })
  }
  const lockout = createRedisLockout({
    conn,
    keyPrefix,
    config: lockoutConfig,
    fault,
    announce: (scope, key, ms) => { conn.publish(channels.lockout, JSON.stringify({ scope, key, ms })).catch(() => {}) }
  })
  const revokeListeners: Array<(user: string) => void> = []

  // Anyone who can publish on this Redis can send these: they only make a node re-check a user
  // against the store, or close an address' sockets early, for at most maxDuration.
  events.on('message', (channel: string, message: string) => {
    if (channel === channels.revoke) {
      if (USERNAME_PATTERN.test(message)) for (const l of revokeListeners) l(message)
      return
    }
    if (channel !== channels.lockout || message.length > 4 * MAX_KEY_LENGTH) return
    let m: { scope?: unknown; key?: unknown; ms?: unknown }
    try { m = JSON.parse(message) } catch { return }
    if (typeof m.scope !== 'string' || !SCOPES.has(m.scope) || typeof m.key !== 'string' || m.key.length > MAX_KEY_LENGTH) return
    if (typeof m.ms !== 'number' || !(m.ms > 0) || m.ms > lockoutConfig.maxDuration * 1000) return
    lockout.received(m.scope as LockoutScope, m.key, m.ms)
  })
  await events.subscribe(channels.revoke, channels.lockout)

  // A failover or a restart that answers within connectTimeout is not an outage: ioredis
  // reconnects (backing off up to 2 s) and clients never notice.
  const outageListeners: Array<() => void> = []
  let outage: NodeJS.Timeout | undefined
  let watching = true
  conn.on('close', () => {
    if (!watching || outage !== undefined) return
    outage = setTimeout(() => { if (watching) for (const l of outageListeners) l() }, config.redis.connectTimeout)
    outage.unref()
  })
  conn.on('ready', () => { clearTimeout(outage); outage = undefined })

  return {
    holders: createRedisHolders({ conn, keyPrefix, brokerId, log, fault }),
    owners: createRedisClientIds(conn, keyPrefix, fault),
    lockout,
    async revoke (user) {
      await conn.publish(channels.revoke, user)
    },
    onRevoke (listener) {
      revokeListeners.push(listener)
    },
    onOutage (listener) {
      outageListeners.push(listener)
    },
    channels: [channels.revoke, channels.lockout],
    close () {
      watching = false
      clearTimeout(outage)
    }
  }
}
