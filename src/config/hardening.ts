// The limits a broker exposed to the internet needs, each with a safe default (docs/security.md).
import { fail, int, object, oneOf, type Raw } from './fields.js'

/** Brute-force lockout: failed logins counted per account and per source address. */
export interface LockoutConfig {
  /** Seconds over which failures are counted (a sliding window). */
  readonly window: number
  /** Failures for one account, from any address, that lock the account; 0 turns this off. */
  readonly maxFailuresPerUser: number
  /** Failures from one address, for any accounts, that lock the address; 0 turns this off. */
  readonly maxFailuresPerIp: number
  /** Seconds of the first lockout; each further lockout of the same key doubles it. */
  readonly duration: number
  /** Upper bound of the doubling, seconds. */
  readonly maxDuration: number
}

/** Logins checked at once (store lookup + bcrypt) and waiting; past both a CONNECT gets 0x89. */
export interface LoginQueueConfig {
  /** Logins in progress at once; 0 means two per password worker. */
  readonly concurrency: number
  /** Logins that may wait for a free slot; one more is refused with "server busy". */
  readonly maxWaiting: number
}

/**
 * Which client ids a user may use: `owner` (an id belongs to the first user that logged in with
 * it), `exact` (id = user), `prefix` (the user, or the user and a separator: `sensor-1-x`),
 * `none` (any id not held by another user's live session).
 */
export type ClientIdBinding = 'owner' | 'none' | 'exact' | 'prefix'

export interface LimitsConfig {
  /** Open sockets across all listeners; one more is closed at once. */
  readonly maxConnections: number
  /** Open sockets from one IP address; 0 turns this off (devices behind one NAT share an address). */
  readonly maxConnectionsPerIp: number
  /** Seconds a TLS handshake may take. */
  readonly tlsHandshakeTimeout: number
  /** Seconds from accepting a socket to a complete CONNECT packet. */
  readonly connectTimeout: number
  /**
   * Largest keepalive, seconds: MQTT 5 clients are told Server Keep Alive, 3.1.1 clients asking
   * more (or 0) are refused. 0: no cap (3.1.1 keepalive 0 accepted, as Mosquitto's default).
   */
  readonly maxKeepAlive: number
  /**
   * QoS 2 PUBLISHes one client may have awaiting PUBREL (advertised to MQTT 5 clients as Receive
   * Maximum); one more is DISCONNECT 0x93 (MQTT 5) or a closed connection (3.1.1).
   */
  readonly receiveMaximum: number
  /** Largest MQTT packet accepted, bytes (advertised to MQTT 5 clients as Maximum Packet Size). */
  readonly maxPacketSize: number
  /**
   * Longest client identifier, bytes of UTF-8. MQTT allows 65 535; a longer one than this is
   * refused at CONNECT (0x85 / 3.1.1 return code 2), before any credential work, so no id of
   * that size reaches the ownership table or a log line.
   */
  readonly maxClientIdLength: number
  /** Longest topic name or filter, bytes of UTF-8. */
  readonly maxTopicLength: number
  /** Most levels in a topic name or filter. */
  readonly maxTopicLevels: number
  /** Subscriptions one client may hold at once. */
  readonly maxSubscriptions: number
  /** Bytes waiting to be written to one client before it is disconnected as too slow. */
  readonly maxQueuedBytes: number
  /** PUBLISH packets and payload bytes per second one client may send (token bucket, one second of burst). */
  readonly publishRate: { readonly messages: number; readonly bytes: number }
  /** SUBSCRIBE + UNSUBSCRIBE packets and the filters they carry per second one client may send (the same). */
  readonly subscribeRate: { readonly packets: number; readonly filters: number }
}

export interface ShutdownConfig {
  /** Seconds SIGTERM waits for acknowledged messages to reach connected subscribers. */
  readonly drainTimeout: number
}

/** Passwords verified recently, remembered as keyed digests so a frequent login skips bcrypt. */
export interface CredentialCacheConfig {
  /** Seconds a verified password is remembered; 0 turns the cache off. */
  readonly ttl: number
  /** Accounts remembered at once (least recently used forgotten first). */
  readonly maxEntries: number
}

export interface AuthHardening {
  readonly lockout: LockoutConfig
  readonly loginQueue: LoginQueueConfig
  readonly credentialCache: CredentialCacheConfig
  readonly clientIdBinding: ClientIdBinding
  /** Seconds between re-checks of connected users against the store; 0 turns revocation of live sessions off. */
  readonly recheckInterval: number
}

export const AUTH_HARDENING_KEYS = ['lockout', 'loginQueue', 'credentialCache', 'clientIdBinding', 'recheckInterval'] as const
const DAY = 86_400

/** Reads `auth.lockout`, `auth.loginQueue`, `auth.credentialCache`, `auth.clientIdBinding` and `auth.recheckInterval`. */
export function parseAuthHardening (auth: Raw): AuthHardening {
  const l = object(auth.lockout, 'auth.lockout', ['window', 'maxFailuresPerUser', 'maxFailuresPerIp', 'duration', 'maxDuration'])
  const duration = int(l, 'duration', 'auth.lockout.duration', 60, 1, DAY)
  const maxDuration = int(l, 'maxDuration', 'auth.lockout.maxDuration', 3600, 1, DAY)
  if (maxDuration < duration) fail('auth.lockout.maxDuration', `must be at least auth.lockout.duration (${duration})`)
  const q = object(auth.loginQueue, 'auth.loginQueue', ['concurrency', 'maxWaiting'])
  const c = object(auth.credentialCache, 'auth.credentialCache', ['ttl', 'maxEntries'])
  return Object.freeze({
    lockout: Object.freeze({
      window: int(l, 'window', 'auth.lockout.window', 900, 1, DAY),
      maxFailuresPerUser: int(l, 'maxFailuresPerUser', 'auth.lockout.maxFailuresPerUser', 10, 0, 100_000),
      maxFailuresPerIp: int(l, 'maxFailuresPerIp', 'auth.lockout.maxFailuresPerIp', 50, 0, 100_000),
      duration,
      maxDuration
    }),
    loginQueue: Object.freeze({
      concurrency: int(q, 'concurrency', 'auth.loginQueue.concurrency', 0, 0, 1024),
      maxWaiting: int(q, 'maxWaiting', 'auth.loginQueue.maxWaiting', 100, 0, 100_000)
    }),
    credentialCache: Object.freeze({
      ttl: int(c, 'ttl', 'auth.credentialCache.ttl', 3600, 0, DAY),
      maxEntries: int(c, 'maxEntries', 'auth.credentialCache.maxEntries', 100_000, 1, 10_000_000)
    }),
    clientIdBinding: oneOf<ClientIdBinding>(auth, 'clientIdBinding', 'auth.clientIdBinding', 'owner', ['owner', 'none', 'exact', 'prefix']),
    recheckInterval: int(auth, 'recheckInterval', 'auth.recheckInterval', 30, 0, DAY)
  })
}

/** Reads the root `limits` section. */
export function parseLimits (value: unknown): LimitsConfig {
  const p = 'limits'
  const raw = object(value, p, ['maxConnections', 'maxConnectionsPerIp', 'tlsHandshakeTimeout', 'connectTimeout', 'maxKeepAlive',
    'receiveMaximum', 'maxPacketSize', 'maxClientIdLength', 'maxTopicLength', 'maxTopicLevels', 'maxSubscriptions', 'maxQueuedBytes', 'publishRate', 'subscribeRate'])
  const rate = object(raw.publishRate, `${p}.publishRate`, ['messages', 'bytes'])
  const subRate = object(raw.subscribeRate, `${p}.subscribeRate`, ['packets', 'filters'])
  const maxPacketSize = int(raw, 'maxPacketSize', `${p}.maxPacketSize`, 65_536, 128, 268_435_455)
  return Object.freeze({
    maxConnections: int(raw, 'maxConnections', `${p}.maxConnections`, 10_000, 1, 1_000_000),
    maxConnectionsPerIp: int(raw, 'maxConnectionsPerIp', `${p}.maxConnectionsPerIp`, 100, 0, 1_000_000),
    tlsHandshakeTimeout: int(raw, 'tlsHandshakeTimeout', `${p}.tlsHandshakeTimeout`, 10, 1, 300),
    connectTimeout: int(raw, 'connectTimeout', `${p}.connectTimeout`, 10, 1, 300),
    maxKeepAlive: int(raw, 'maxKeepAlive', `${p}.maxKeepAlive`, 300, 0, 65_535),
    receiveMaximum: int(raw, 'receiveMaximum', `${p}.receiveMaximum`, 32, 1, 65_535),
    maxPacketSize,
    // 256: room for a UUID, a MAC address or a long device path; AWS IoT allows 128.
    maxClientIdLength: int(raw, 'maxClientIdLength', `${p}.maxClientIdLength`, 256, 1, 65_535),
    maxTopicLength: int(raw, 'maxTopicLength', `${p}.maxTopicLength`, 256, 1, 65_535),
    // aedes' topic matcher cannot go deeper than 100 levels.
    maxTopicLevels: int(raw, 'maxTopicLevels', `${p}.maxTopicLevels`, 16, 1, 100),
    maxSubscriptions: int(raw, 'maxSubscriptions', `${p}.maxSubscriptions`, 64, 1, 100_000),
    maxQueuedBytes: int(raw, 'maxQueuedBytes', `${p}.maxQueuedBytes`, 1_048_576, maxPacketSize, 1_073_741_824),
    publishRate: Object.freeze({
      messages: int(rate, 'messages', `${p}.publishRate.messages`, 100, 1, 1_000_000),
      // A packet of the largest allowed size must fit in one second's bucket.
      bytes: int(rate, 'bytes', `${p}.publishRate.bytes`, 1_048_576, maxPacketSize, 1_073_741_824)
    }),
    subscribeRate: Object.freeze({
      packets: int(subRate, 'packets', `${p}.subscribeRate.packets`, 50, 1, 1_000_000),
      // A SUBSCRIBE with more filters than this is always over the rate.
      filters: int(subRate, 'filters', `${p}.subscribeRate.filters`, 500, 1, 1_000_000)
    })
  })
}

/** Reads the root `shutdown` section. */
export function parseShutdown (value: unknown): ShutdownConfig {
  const raw = object(value, 'shutdown', ['drainTimeout'])
  return Object.freeze({ drainTimeout: int(raw, 'drainTimeout', 'shutdown.drainTimeout', 5, 0, 300) })
}
