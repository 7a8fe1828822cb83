// ioredis connections made from the validated `cluster.redis` config: the one place that knows
// how the broker reaches Redis, for the engine (pub/sub, persistence) and whatever shared state
// later lives there. Every connection opened here is closed by close().
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls'
import { AbstractConnector, Redis, type RedisOptions } from 'ioredis'
import type { RedisConfig, RedisTlsConfig } from '../config/cluster.js'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'

export interface RedisConnections {
  /** `host:port`, `rediss://host:port` over TLS, for log lines and messages (never the password). */
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

// Node's codes for a server certificate whose chain ends at no CA the client trusts.
const UNTRUSTED = new Set(['SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'])

/**
 * One line saying why a connection failed, in the operator's terms where TLS is the cause
 * (OpenSSL's own messages span lines and name its source files).
 */
function redisFailure (err: Error, config: RedisConfig): string {
  const code = (err as NodeJS.ErrnoException).code ?? ''
  const message = err.message.split('\n')[0] ?? ''
  if (config.tls === undefined) return message
  if (UNTRUSTED.has(code)) {
    const by = config.tls.files.ca === undefined ? 'a CA of this system (set cluster.redis.tls.ca)' : `the CA in ${config.tls.files.ca} (cluster.redis.tls.ca)`
    return `TLS: Redis' certificate is not signed by ${by}: ${message}`
  }
  if (code === 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' || (code === 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE' && config.tls.cert === undefined)) {
    return 'TLS: Redis requires a client certificate (tls-auth-clients): set cluster.redis.tls.cert and key'
  }
  if (code === 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA' || code === 'ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE') {
    return `TLS: Redis does not accept the client certificate in ${config.tls.files.cert ?? '(none)'} (${code})`
  }
  if (code.startsWith('ERR_SSL_')) return `TLS: ${code}`
  if (code.startsWith('ERR_TLS_') || /^[A-Z_]+_CERT|^CERT_/.test(code)) return `TLS: ${message}`
  return message
}

export function createRedisConnections (config: RedisConfig, log: Logger): RedisConnections {
  const address = `${config.tls === undefined ? '' : 'rediss://'}${config.host}:${config.port}`
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
      // Given to tls.connect, which verifies the certificate and its name.
      ...(config.tls === undefined ? {} : { tls: tlsOptions(config.tls), Connector: TlsConnector }),
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
        const reason = redisFailure(err, config)
        log.warn({ event: 'redis.error', role, redis: address, reason }, `Redis at ${address} (${role}): ${reason}`)
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
        const failure = cause ?? err as Error
        let reason = redisFailure(failure, config)
        // Said at start only, where a port or a certificate is new. A plaintext client on a TLS
        // port sees only the connection dropped (Redis finds no handshake in it), and so does,
        // under TLS 1.3, a client whose certificate Redis refuses after the handshake.
        if ((failure as NodeJS.ErrnoException).code === 'ECONNRESET' || reason === 'Connection is closed.') {
          if (config.tls === undefined) reason += ' (if this is Redis\' tls-port, set cluster.redis.tls)'
          else if (config.tls.files.cert !== undefined) reason += ` (TLS: does Redis' tls-ca-cert-file sign ${config.tls.files.cert}?)`
        }
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

function tlsOptions (tls: RedisTlsConfig): ConnectionOptions {
  return {
    ...(tls.ca === undefined ? {} : { ca: tls.ca }),
    ...(tls.cert === undefined ? {} : { cert: tls.cert }),
    ...(tls.key === undefined ? {} : { key: tls.key }),
    ...(tls.servername === undefined ? {} : { servername: tls.servername }),
    // Node's default already; written out so that no spread of options above can turn it off.
    rejectUnauthorized: true
  }
}

/**
 * ioredis' own connector, with one difference: the socket keeps an error listener for its whole
 * life. ioredis listens with once(), and a failed verification can be followed by a second
 * error (the alert Redis answers with), which with no listener left ends the process
 * (redis/ioredis#961). ioredis still gets, and reports, the first.
 */
class TlsConnector extends AbstractConnector {
  private readonly options: RedisOptions

  // ioredis passes the options the connection was made with (with its defaults filled in).
  constructor (options: unknown) {
    const o = options as RedisOptions
    super(o.disconnectTimeout ?? 2000)
    this.options = o
  }

  override async connect (): Promise<TLSSocket> {
    this.connecting = true
    // A tick later, as ioredis' connector does: disconnect() may come first.
    await new Promise((resolve) => process.nextTick(resolve))
    if (!this.connecting) throw new Error('Connection is closed.')
    const { host, port, tls } = this.options
    const stream = tlsConnect({ ...(host === undefined ? {} : { host }), ...(port === undefined ? {} : { port }), ...tls })
    stream.once('error', (err) => { this.firstError = err })
    stream.on('error', () => {})
    this.stream = stream
    return stream
  }
}
