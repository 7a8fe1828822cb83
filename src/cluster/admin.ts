// What the CLI does in a cluster's Redis: the client id owners (`clientid list|release`) and
// telling the nodes that a user changed (`user disable|remove|passwd|rotate-totp`), so they
// re-check that user's live sessions at once instead of at their next auth.recheckInterval.
import type { ClusterConfig } from '../config/cluster.js'
import type { Logger } from '../log.js'
import type { ClientIdOwners } from '../stores/store.js'
import { createRedisClientIds } from './client-id-owners.js'
import { createRedisConnections } from './redis.js'
import { stateChannels } from './state.js'

export interface ClusterAdmin {
  readonly owners: ClientIdOwners
  /** Every node re-checks `user`'s live sessions against the user store now. */
  revoke (user: string): Promise<void>
  close (): Promise<void>
}

/** One connection; rejects within `connectTimeout` with one line naming Redis when it cannot connect. */
export async function openClusterAdmin (config: ClusterConfig, log: Logger): Promise<ClusterAdmin> {
  const redis = createRedisConnections(config.redis, log)
  const conn = redis.open('admin', { failFast: true })
  try {
    await redis.ready(conn)
  } catch (err) {
    await redis.close()
    throw err
  }
  return {
    owners: createRedisClientIds(conn, config.redis.keyPrefix, (err) => err as Error),
    async revoke (user) {
      await conn.publish(stateChannels(config.redis.keyPrefix).revoke, user)
    },
    close: async () => { await redis.close() }
  }
}
