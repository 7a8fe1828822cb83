import { performance } from 'node:perf_hooks'
import type { Socket } from 'node:net'
import type { Aedes, AedesOptions, Client, ConnectPacket, PublishPacket } from 'aedes'
import type { EngineOptions } from '../engine/aedes.js'
import type { Packet } from 'mqtt-packet'
import type { HookEvent } from '../auth/hooks.js'
import type { LimitsConfig } from '../config/hardening.js'
import type { Logger } from '../log.js'
import { createLogGate } from '../log-gate.js'
import type { Identity, LoginFailure } from '../types.js'
import { shownId } from '../auth/refusal-log.js'
import { createKicks, type RateState } from './kick.js'
import { createQueueGuard } from './queue.js'
import { createPublishBucket, createSubscribeBucket } from './rate.js'
import type { LimitReporter } from './report.js'

export interface GuardOptions {
  limits: LimitsConfig
  report: LimitReporter
  /** For the login.failed line of a refused keepalive when `loginFailed` is not given. */
  log: Logger
  onEvent?: (event: HookEvent) => void
  /** Who a logged-in client is (the auth hooks know), for the log lines. */
  identityOf?: (client: Client) => Identity | undefined
  /** Counts and logs (gated) a refused login: the auth hooks' own, so one gate bounds every login.failed line. */
  loginFailed?: (client: Client, reason: LoginFailure) => void
  /** Monotonic milliseconds; tests may replace it. */
  now?: () => number
}

export interface Guards {
  /** aedes options: the broker's own limits plus the given hooks wrapped by ours. */
  readonly options: EngineOptions
  /** Logs the limits aedes enforces itself (packet size, CONNECT timeout). */
  attach (broker: Aedes): void
  /** Called for each socket handed to the broker. */
  accept (socket: Socket): void
}

// CONNACK return codes (3.1.1) the authenticate hook may give; aedes maps them for MQTT 5.
const RC_IDENTIFIER_REJECTED = 2 // [0x85]
const RC_NOT_AUTHORIZED = 5 // [0x87]

/** aedes' own limits: [MQTT-3.1.4] CONNECT timeout, Server Keep Alive (v5), Maximum Packet Size. */
export function aedesLimitOptions (limits: LimitsConfig): Partial<AedesOptions> {
  return {
    connectTimeout: limits.connectTimeout * 1000,
    keepaliveLimit: limits.maxKeepAlive,
    maximumPacketSize: limits.maxPacketSize,
    // Advertised in CONNACK and enforced by aedes on QoS 2 awaiting PUBREL (patches/aedes/0003).
    receiveMaximum: limits.receiveMaximum
    // maxTopicLevels stays at aedes' 100: below that our guards refuse with a SUBACK / PUBACK
    // code and a log line, where aedes would only close the connection.
  }
}

interface ConnectRefusal { returnCode: 2 | 5; limit: 'keepalive' | 'client_id' | 'topic'; fields: Record<string, unknown>; msg: string }
interface ClientInternals { subscriptions?: Record<string, unknown> }
interface LimitError extends Error { size?: number; maximumPacketSize?: number; receiveMaximum?: number }

function authError (returnCode: 2 | 5, message: string): Error & { returnCode: 2 | 5 } {
  return Object.assign(new Error(message), { returnCode })
}

function topicSize (topic: string): { length: number; levels: number } {
  let levels = 1
  for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === 47) levels++
  return { length: Buffer.byteLength(topic, 'utf8'), levels }
}

/**
 * Checks the limits before the auth hooks see a CONNECT, PUBLISH or SUBSCRIBE, and before a
 * delivery; anything over a limit never reaches them. Every refusal is reported (event + log).
 */
export function createGuards (inner: Partial<AedesOptions>, opts: GuardOptions): Guards {
  const { limits, report } = opts
  const now = opts.now ?? (() => performance.now())
  const emit = opts.onEvent ?? (() => {})
  const remotes = new WeakMap<object, string>()
  const refusals = new WeakMap<Client, ConnectRefusal>()
  const kicks = createKicks()
  const reserved = new WeakMap<Client, Set<string>>()
  const loginLines = createLogGate()
  const queue = createQueueGuard(limits.maxQueuedBytes, (client, queuedBytes) => {
    report.hit('queue', client.id, 'warn', { ...who(client), queuedBytes, max: limits.maxQueuedBytes }, 'client disconnected: too many bytes waiting to be sent')
  })

  const remoteOf = (client: Client): string => remotes.get(client.conn) ?? (client.conn as Partial<Socket>).remoteAddress ?? 'unknown'
  const who = (client: Client): Record<string, unknown> => ({ user: opts.identityOf?.(client)?.user, clientId: client.id, remote: remoteOf(client) })
  const topicTooBig = (t: { length: number; levels: number }): boolean => t.length > limits.maxTopicLength || t.levels > limits.maxTopicLevels
  const loginFailed = opts.loginFailed ?? ((client: Client, reason: LoginFailure): void => {
    emit({ type: 'login.failed', reason })
    const remote = remoteOf(client)
    const open = loginLines.pass(`${reason}\u0000${remote}`)
    if (open !== undefined) opts.log.warn({ event: 'login.failed', reason, clientId: client.id, remote, ...(open.suppressed > 0 ? { suppressed: open.suppressed } : {}) }, 'login refused')
  })

  /**
   * Every packet after the CONNECT, as read: SUBSCRIBE and UNSUBSCRIBE are counted against
   * limits.subscribeRate (packets and filters); the one over it is not handled, nor is anything
   * the client sends after it.
   */
  function admit (client: Client, packet: Packet): boolean {
    if (kicks.peek(client)?.kicked !== undefined) return false
    if (packet.cmd !== 'subscribe' && packet.cmd !== 'unsubscribe') return true
    const state = kicks.stateOf(client)
    const filters = packet.cmd === 'subscribe' ? packet.subscriptions.length : (packet.unsubscriptions?.length ?? 0)
    const t = now()
    state.subscribe ??= createSubscribeBucket(limits.subscribeRate, t)
    const over = state.subscribe.take(filters, t)
    if (over === undefined) return true
    const identified = opts.identityOf?.(client) !== undefined
    report.hit('subscribe_rate', identified ? client.id : remoteOf(client), 'warn', { ...who(client), kind: over, max: limits.subscribeRate[over] },
      'client disconnected: subscribe rate exceeded')
    kicks.kick(client, state)
    return false
  }

  const preConnect: AedesOptions['preConnect'] = (client, packet: ConnectPacket, done) => {
    const max = limits.maxKeepAlive
    // MQTT 5 clients are told Server Keep Alive by aedes; 3.1.1 has no way to say it, so, as
    // Mosquitto's max_keepalive does, the CONNECT is refused (keepalive 0 would mean never).
    // maxKeepAlive 0 is no cap at all.
    const keepalive = packet.keepalive ?? 0
    const idLength = Buffer.byteLength(packet.clientId ?? '')
    if (idLength > limits.maxClientIdLength) {
      // 0x85 Client Identifier not valid (3.1.1: 2, identifier rejected).
      refusals.set(client, { returnCode: RC_IDENTIFIER_REJECTED, limit: 'client_id', fields: { length: idLength, max: limits.maxClientIdLength }, msg: 'login refused: client identifier too long' })
    } else if (max > 0 && packet.protocolVersion !== 5 && (keepalive === 0 || keepalive > max)) {
      refusals.set(client, { returnCode: RC_IDENTIFIER_REJECTED, limit: 'keepalive', fields: { requested: keepalive, max }, msg: 'login refused: keepalive out of bounds' })
      // Lets aedes' own check (which would answer the invalid code 6) pass to our refusal.
      packet.keepalive = max
    } else if (packet.will !== undefined && packet.will !== null) {
      const size = topicSize(packet.will.topic)
      if (topicTooBig(size)) refusals.set(client, { returnCode: RC_NOT_AUTHORIZED, limit: 'topic', fields: { action: 'will', ...size }, msg: 'login refused: will topic too long or too deep' })
    }
    if (inner.preConnect === undefined) done(null, true)
    else inner.preConnect(client, packet, done)
  }

  const authenticate: AedesOptions['authenticate'] = (client, username, password, done) => {
    const refusal = refusals.get(client)
    if (refusal === undefined) {
      if (inner.authenticate === undefined) done(null, true)
      else inner.authenticate(client, username, password, done)
      return
    }
    refusals.delete(client)
    const remote = remoteOf(client)
    // Refused before any credential work: no password hashing, no lockout count.
    const clientId = shownId(client.id)
    report.hit(refusal.limit, remote, 'warn', refusal.limit === 'keepalive' ? { clientId, remote, ...refusal.fields } : { user: undefined, clientId, remote, ...refusal.fields }, refusal.msg)
    if (refusal.limit === 'keepalive') loginFailed(client, 'keepalive_rejected')
    done(authError(refusal.returnCode, refusal.msg), false)
  }

  function refuseRate (client: Client, state: RateState, kind: 'messages' | 'bytes', done: (err: Error) => void): void {
    report.hit('publish_rate', client.id, 'warn', { ...who(client), kind, max: limits.publishRate[kind] }, 'client disconnected: publish rate exceeded')
    kicks.kick(client, state, [() => done(new Error('publish rate exceeded'))])
  }

  const authorizePublish: AedesOptions['authorizePublish'] = (client, packet: PublishPacket, done) => {
    // Wills (no `cmd`) are not the client sending: never rate-limited; their topic was checked
    // with the CONNECT.
    if (client === null || (packet as Partial<PublishPacket>).cmd === undefined) {
      if (inner.authorizePublish === undefined) done(null)
      else inner.authorizePublish(client, packet, done)
      return
    }
    const state = kicks.stateOf(client)
    if (state.kicked !== undefined) {
      // The rest of a burst that was already read: refused like the one that tripped the rate.
      const fail = (): void => done(new Error('publish rate exceeded'))
      if (state.kicked.closed) fail()
      else state.kicked.waiting.push(fail)
      return
    }
    const payload = packet.payload
    state.publish ??= createPublishBucket(limits.publishRate, now())
    const over = state.publish.take(typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length, now())
    if (over !== undefined) {
      refuseRate(client, state, over, done)
      return
    }
    const size = topicSize(packet.topic)
    if (topicTooBig(size)) {
      report.hit('topic', client.id, 'warn', { ...who(client), action: 'publish', ...size }, 'publish refused: topic too long or too deep')
      // As an ACL denial: v5 PUBACK 0x87 (QoS 0: dropped); 3.1.1 as acl.deniedPublishV311 says.
      done(new Error('topic exceeds limits'))
      return
    }
    if (inner.authorizePublish === undefined) done(null)
    else inner.authorizePublish(client, packet, done)
  }

  const authorizeSubscribe: AedesOptions['authorizeSubscribe'] = (client, sub, done) => {
    const size = topicSize(sub.topic)
    if (topicTooBig(size)) {
      report.hit('topic', client.id, 'warn', { ...who(client), action: 'subscribe', ...size }, 'subscription refused: filter too long or too deep')
      done(null, null)
      return
    }
    // Distinct filters held plus those being granted right now (one SUBSCRIBE asks for all its
    // filters in parallel, before aedes records any); re-subscribing a filter takes no slot.
    // Filters are peer-chosen names: own keys only (`toString` in {} is true).
    const held = (client as unknown as ClientInternals).subscriptions ?? {}
    let pending = reserved.get(client)
    if (pending === undefined) reserved.set(client, pending = new Set())
    if (!Object.hasOwn(held, sub.topic) && !pending.has(sub.topic)) {
      let count = Object.keys(held).length
      for (const reservedTopic of pending) if (!Object.hasOwn(held, reservedTopic)) count++
      if (count >= limits.maxSubscriptions) {
        report.hit('subscriptions', client.id, 'warn', { ...who(client), max: limits.maxSubscriptions }, 'subscription refused: too many subscriptions')
        // aedes cannot answer 0x97 Quota exceeded: SUBACK 0x87 (v5) / 0x80 (3.1.1).
        done(null, null)
        return
      }
      const slots = pending
      const topic = sub.topic
      slots.add(topic)
      const answer: typeof done = (err, granted) => {
        // aedes records a granted filter right after this answer (memory persistence settles
        // within the same turn); until then the reservation stands in for it.
        setImmediate(() => slots.delete(topic))
        done(err, granted)
      }
      if (inner.authorizeSubscribe === undefined) answer(null, sub)
      else inner.authorizeSubscribe(client, sub, answer)
      return
    }
    if (inner.authorizeSubscribe === undefined) done(null, sub)
    else inner.authorizeSubscribe(client, sub, done)
  }

  const authorizeForward: AedesOptions['authorizeForward'] = (client, packet) => {
    if (kicks.leaving(client) || !queue.allow(client)) return null
    return inner.authorizeForward === undefined ? packet : inner.authorizeForward(client, packet)
  }

  function attach (broker: Aedes): void {
    const onError = (client: Client, err: LimitError): void => {
      if (err.message === 'packet too large') {
        const remote = remoteOf(client)
        report.hit('packet_size', remote, 'warn', { clientId: client.id ?? undefined, remote, size: err.size, max: err.maximumPacketSize }, 'connection closed: packet too large')
      } else if (err.message === 'receive maximum exceeded') {
        report.hit('receive_maximum', client.id, 'warn', { ...who(client), max: err.receiveMaximum }, 'client disconnected: too many QoS 2 messages awaiting PUBREL')
      } else if (err.message === 'connect did not arrive in time') {
        const remote = remoteOf(client)
        report.hit('connect_timeout', remote, 'info', { remote }, 'connection closed: no CONNECT in time')
      }
    }
    broker.on('clientError', onError)
    broker.on('connectionError', onError)
  }

  return {
    // screenPacket: every packet, in order, before aedes handles it (patches/aedes/0012);
    // packetHandled: each one answered (patches/aedes/0021), for the rate kick's DISCONNECT.
    options: { ...inner, ...aedesLimitOptions(limits), preConnect, screenPacket: admit, packetHandled: kicks.handled, authenticate, authorizePublish, authorizeSubscribe, authorizeForward },
    attach,
    accept (socket) {
      // Read now: a socket aedes destroys (CONNECT timeout) no longer knows its peer.
      const remote = socket.remoteAddress
      if (remote !== undefined) remotes.set(socket, remote)
      queue.accept(socket)
    }
  }
}
