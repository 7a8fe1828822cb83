// ioredis connections made from the validated `cluster.redis` config: the one place that knows
// how the broker reaches Redis, for the engine (pub/sub, persistence) and whatever shared state
// later lives there. Every connection opened here is closed by close().
import { Redis, type RedisOptions } from 'ioredis'
import type { RedisConfig } from '../config/cluster.js'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'

export interface RedisConnections {
  /** `host:port`, for log lines and messages (never the password). */
  readonly address: string
  /**
   * A new connection, not yet connected (see ready). `prefixed`: every key gets
   * `keyPrefix`; pub/sub channels never do (ioredis does not prefix them), so leave it off for
   * the connections that publish and subscribe. `failFast`: a command sent while Redis is
   * unreachable fails at once instead of waiting in ioredis' offline queue, and one that gets
   * no answer fails after `connectTimeout` (security state: a login must not wait on a Redis
   * that is gone, nor be decided on what this node last knew).
   */
  open (role: string, opts?: { prefixed?: boolean; failFast?: boolean; pipelined?: boolean }): Redis
  /**
   * Connects `conn` and resolves once it answers PING; otherwise rejects within
   * `connectTimeout` (plus a second) with one line naming host:port and why.
   */
  ready (conn: Redis): Promise<void>
  /** Quits every connection opened here (bounded: a Redis that is down does not hold it up). */
  close (): Promise<void>
}

// How long QUIT may wait for its reply before the socket is dropped.
const QUIT_MS = 1000

export function createRedisConnections (config: RedisConfig, log: Logger): RedisConnections {
  const address = `${config.host}:${config.port}`
  const opened = new Set<Redis>()

  function options (prefixed: boolean, failFast: boolean, pipelined: boolean): RedisOptions {
    return {
      host: config.host,
      port: config.port,
      ...(config.username === undefined ? {} : { username: config.username }),
      ...(config.password === undefined ? {} : { password: config.password }),
      db: config.db,
      ...(prefixed ? { keyPrefix: config.keyPrefix } : {}),
      connectTimeout: config.connectTimeout,
      ...(failFast ? { enableOfflineQueue: false, commandTimeout: config.connectTimeout, maxRetriesPerRequest: 0 } : {}),
      // Connected by ready(), where a failure is an answer instead of a retry loop at start.
      lazyConnect: true,
      // Commands issued in one turn of the event loop leave in one write: a burst of PUBLISHes
      // is one syscall, not one each.
      ...(pipelined ? { enableAutoPipelining: true } : {})
    }
  }

  return {
    address,
    open (role, opts = {}) {
      const conn = new Redis(options(opts.prefixed ?? false, opts.failFast ?? false, opts.pipelined ?? false))
      opened.add(conn)
      // One line per outage and connection, not one per retry; ioredis prints unhandled errors
      // to stderr itself, so a listener is always attached.
      let down = false
      conn.on('error', (err: Error) => {
        if (down) return
        down = true
        log.warn({ event: 'redis.error', role, redis: address, reason: err.message }, `Redis at ${address} (${role}): ${err.message}`)
      })
      conn.on('ready', () => {
        if (!down) return
        down = false
        log.info({ event: 'redis.reconnected', role, redis: address }, `Redis at ${address} (${role}) answers again`)
      })
      return conn
    },
    async ready (conn) {
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${config.connectTimeout} ms`)), config.connectTimeout + 1000)
      })
      // A refused AUTH comes as an error event; connect() then only says "Connection is closed".
      let cause: Error | undefined
      const onError = (err: Error): void => { cause ??= err }
      conn.on('error', onError)
      try {
        await Promise.race([(async () => { await conn.connect(); await conn.ping() })(), deadline])
      } catch (err) {
        const reason = (cause ?? err as Error).message.split('\n')[0]
        throw new BastionError('BASTION_ERR_CLUSTER', `cluster.redis: cannot use Redis at ${address}: ${reason}`, { cause: cause ?? err })
      } finally {
        clearTimeout(timer)
        conn.off('error', onError)
      }
    },
    async close () {
      await Promise.all([...opened].map(async (conn) => {
        opened.delete(conn)
        if (conn.status === 'ready') {
          let timer: NodeJS.Timeout | undefined
          await Promise.race([conn.quit().catch(() => {}), new Promise((resolve) => { timer = setTimeout(resolve, QUIT_MS) })])
          clearTimeout(timer)
        }
        // Also stops the reconnect loop of a connection whose Redis is gone.
        conn.disconnect()
      }))
    }
  }
}
