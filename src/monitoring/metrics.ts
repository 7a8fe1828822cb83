import type { Socket } from 'node:net'
import type { Aedes } from 'aedes'
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client'
import type { HookEvent } from '../auth/hooks.js'
import { certificateExpiry } from '../certs/issue.js'
import { LIMIT_NAMES } from '../limits/report.js'

export interface MetricsOptions {
  /** auth.totp.window: a code that matched `window` steps away is a drifting device clock. */
  totpWindow: number
  /** Node's process metrics (CPU, memory, event loop lag, GC) beside ours; default true. */
  processMetrics?: boolean
}

/** The Prometheus view of one broker; labels are bounded categories, never names or topics. */
export interface BrokerMetrics {
  readonly registry: Registry
  readonly contentType: string
  /** The hooks' event sink (logins, refusals, deliveries). */
  readonly onEvent: (event: HookEvent) => void
  /** Counts connected clients and PUBLISH packets received from clients. */
  attach (broker: Aedes): void
  /** Counts the MQTT bytes of one client connection. */
  trackSocket (socket: Socket): void
  /** Reports the expiry of a listener's certificate file, read at each scrape (SIGHUP may swap it). */
  certificate (listener: string, path: string): void
  /** Times one user lookup against the store or backend named `store`. */
  timeLookup<T> (store: string, lookup: () => Promise<T>): Promise<T>
  /** The exposition text for GET /metrics. */
  text (): Promise<string>
}

// Lookups are a memory read (file store) up to a network round trip with a pool wait (MySQL, HTTP).
const LOOKUP_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

/**
 * One registry per broker, never prom-client's global one: several brokers can share a process
 * (tests, embedding) and each must report only its own traffic. With `start --workers` the
 * primary serves the workers' registries merged (prom-client's AggregatorRegistry): counters and
 * histograms summed, gauges by their `aggregator` (sum unless set).
 */
export function createMetrics (opts: MetricsOptions): BrokerMetrics {
  const registry = new Registry()
  const registers = [registry]
  if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry })

  let broker: Aedes | undefined
  new Gauge({
    name: 'bastion_connected_clients',
    help: 'MQTT clients currently connected (logged in).',
    registers,
    // Each connection lives in one worker: the host's count is the sum.
    aggregator: 'sum',
    collect () { this.set(broker?.connectedClients ?? 0) }
  })
  const logins = new Counter({
    name: 'bastion_logins_total',
    help: 'Login attempts by result (ok, failed) and, for failures, the refusal category (reason="none" when ok).',
    labelNames: ['result', 'reason'] as const,
    registers
  })
  logins.inc({ result: 'ok', reason: 'none' }, 0)
  const denials = new Counter({
    name: 'bastion_acl_denials_total',
    help: 'ACL refusals by action (publish, subscribe, read = delivery to a subscriber, will).',
    labelNames: ['action'] as const,
    registers
  })
  for (const action of ['publish', 'subscribe', 'read', 'will']) denials.inc({ action }, 0)
  const received = new Counter({ name: 'bastion_messages_received_total', help: 'PUBLISH packets accepted from clients (wills included).', registers })
  const delivered = new Counter({ name: 'bastion_messages_delivered_total', help: 'PUBLISH packets sent to subscribers (counted when the read check allows the delivery).', registers })
  const revoked = new Counter({ name: 'bastion_sessions_revoked_total', help: 'Live sessions ended (DISCONNECT 0x98) because their user was disabled, removed or given new credentials.', registers })
  const lockouts = new Counter({
    name: 'bastion_lockouts_total',
    help: 'Lockouts started after repeated failed logins (auth.lockout), by scope: user = an account, ip = a source address, user_ip = an account from one address.',
    labelNames: ['scope'] as const,
    registers
  })
  for (const scope of ['user', 'ip', 'user_ip']) lockouts.inc({ scope }, 0)
  const limitHits = new Counter({
    name: 'bastion_limit_hits_total',
    help: 'Connections, packets and clients refused by a limit (config limits), by limit name.',
    labelNames: ['limit'] as const,
    registers
  })
  const limitNames = new Set<string>(LIMIT_NAMES)
  for (const limit of LIMIT_NAMES) limitHits.inc({ limit }, 0)
  const drift = new Counter({
    name: 'bastion_totp_window_edge_logins_total',
    help: 'Logins whose TOTP code matched only at the edge of auth.totp.window: a device clock drifting away.',
    registers
  })
  const passwordChecks = new Counter({
    name: 'bastion_password_checks_total',
    help: 'Password checks of logins that showed a valid code, by how: hash (bcrypt in the worker pool, or a Mosquitto hash) or cache (auth.credentialCache).',
    labelNames: ['by'] as const,
    registers
  })
  for (const by of ['hash', 'cache']) passwordChecks.inc({ by }, 0)
  const lookups = new Histogram({
    name: 'bastion_store_lookup_duration_seconds',
    help: 'Time to look a user up in the store or auth backend during a login, in seconds.',
    labelNames: ['store'] as const,
    buckets: LOOKUP_BUCKETS,
    registers
  })

  // Socket counters are read at scrape time (and once more when a socket closes): nothing is
  // added to the per-packet path. TLS sockets count the MQTT bytes inside TLS.
  const sockets = new Map<Socket, { read: number; written: number }>()
  const bytesIn = new Counter({ name: 'bastion_received_bytes_total', help: 'MQTT bytes read from client connections (inside TLS).', registers, collect: () => { sync() } })
  const bytesOut = new Counter({ name: 'bastion_sent_bytes_total', help: 'MQTT bytes written to client connections (inside TLS).', registers, collect: () => { sync() } })
  function syncOne (socket: Socket, seen: { read: number; written: number }): void {
    const read = socket.bytesRead
    const written = socket.bytesWritten
    if (read > seen.read) bytesIn.inc(read - seen.read)
    if (written > seen.written) bytesOut.inc(written - seen.written)
    seen.read = read
    seen.written = written
  }
  function sync (): void {
    for (const [socket, seen] of sockets) syncOne(socket, seen)
  }

  const certificates = new Map<string, string>()
  new Gauge({
    name: 'bastion_certificate_expiry_timestamp_seconds',
    help: 'When the server certificate of each TLS listener expires, unix seconds.',
    labelNames: ['listener'] as const,
    registers,
    // Every worker reads the same file: a sum would be a date centuries away. They differ only
    // while the file is being replaced; then the sooner expiry is the one to alert on.
    aggregator: 'min',
    collect () {
      this.reset()
      for (const [listener, path] of certificates) {
        try {
          this.set({ listener }, Math.floor(certificateExpiry(path).getTime() / 1000))
        } catch {
          // A file being replaced or unreadable right now: no sample rather than a wrong one.
        }
      }
    }
  })

  return {
    registry,
    contentType: registry.contentType,
    onEvent (event) {
      switch (event.type) {
        case 'login.ok':
          logins.inc({ result: 'ok', reason: 'none' })
          if (opts.totpWindow > 0 && event.totpDelta !== undefined && Math.abs(event.totpDelta) === opts.totpWindow) drift.inc()
          break
        case 'login.failed':
          logins.inc({ result: 'failed', reason: event.reason })
          break
        case 'acl.denied':
          denials.inc({ action: event.action })
          break
        case 'delivery':
          delivered.inc()
          break
        case 'revoked':
          revoked.inc()
          break
        case 'password_check':
          passwordChecks.inc({ by: event.cached ? 'cache' : 'hash' })
          break
        case 'lockout':
          lockouts.inc({ scope: event.scope })
          break
        case 'limit':
          // Only the fixed names: the label set cannot grow.
          if (limitNames.has(event.limit)) limitHits.inc({ limit: event.limit })
          break
      }
    },
    attach (b) {
      broker = b
      // client is null for the broker's own messages ($SYS, server wills).
      b.on('publish', (_packet, client) => { if (client !== null) received.inc() })
    },
    trackSocket (socket) {
      const seen = { read: 0, written: 0 }
      sockets.set(socket, seen)
      socket.once('close', () => {
        syncOne(socket, seen)
        sockets.delete(socket)
      })
    },
    certificate (listener, path) {
      certificates.set(listener, path)
    },
    async timeLookup (store, lookup) {
      const end = lookups.startTimer({ store })
      try {
        return await lookup()
      } finally {
        end()
      }
    },
    async text () {
      return await registry.metrics()
    }
  }
}
