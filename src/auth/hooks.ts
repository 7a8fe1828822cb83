import type { TLSSocket } from 'node:tls'
import type { Aedes, AedesOptions, Client, ConnectPacket, PublishPacket } from 'aedes'
import type { AclPolicy } from '../acl/policy.js'
import type { Logger } from '../log.js'
import type { Action, Identity, LoginFailure } from '../types.js'
import { isBackendFault, login, type LoginDeps } from './login.js'

export interface HookOptions {
  login: LoginDeps
  policy: AclPolicy
  log: Logger
  /** Upper bound for MQTT 5 Session Expiry Interval, seconds; 0 = sessions end with the connection. */
  maxSessionExpiry: number
  /** Topic for the server will of a client that had none; undefined turns it off. */
  serverWillTopic?: (user: string) => string
}

// MQTT 3.1.1 CONNACK return codes; aedes maps them to the MQTT 5 reason codes in brackets.
const RC_SERVER_UNAVAILABLE = 3 // [0x88]
const RC_BAD_CREDENTIALS = 4 // [0x86]
const RC_NOT_AUTHORIZED = 5 // [0x87]

/** What a CONNECT carried that the authenticate hook needs but aedes does not pass to it. */
interface PendingConnect { will?: ConnectPacket['will']; expiryClamped: boolean }

type AuthError = Error & { returnCode: 2 | 3 | 4 | 5 }
function authError (returnCode: AuthError['returnCode'], message: string): AuthError {
  return Object.assign(new Error(message), { returnCode })
}

/** Fields of aedes 2.0.0-beta.1 clients and brokers that have no public accessor (pinned, tested). */
interface ClientInternals { _disconnected?: boolean; _sessionExpiryClamped?: boolean }
interface BrokerInternals { _takingOver?: Set<string> }

function remoteOf (client: Client): string {
  return (client.conn as Partial<TLSSocket>).remoteAddress ?? 'unknown'
}

function certCommonName (client: Client): string | undefined {
  const sock = client.conn as Partial<TLSSocket>
  if (sock.authorized !== true || typeof sock.getPeerCertificate !== 'function') return undefined
  const cn = sock.getPeerCertificate().subject?.CN
  return typeof cn === 'string' ? cn : undefined
}

/**
 * The one adapter between aedes and our decisions: login results and ACL decisions become
 * CONNACK / SUBACK / PUBACK codes here, and every refusal is logged here, once.
 */
export function createHooks (opts: HookOptions): { options: Partial<AedesOptions>; attach: (broker: Aedes) => void; identityOf: (c: Client) => Identity | undefined } {
  const { log, policy } = opts
  const identities = new WeakMap<Client, Identity>()
  const pending = new WeakMap<Client, PendingConnect>()

  function denied (client: Client, identity: Identity | undefined, action: Action | 'will', topic: string, reason: string): void {
    log.warn({ event: 'acl.denied', user: identity?.user, clientId: client.id, remote: remoteOf(client), action, topic, reason }, 'ACL denied')
  }

  function loginFailed (client: Client, reason: LoginFailure, user: string | undefined): void {
    log.warn({ event: 'login.failed', reason, user, clientId: client.id, remote: remoteOf(client) }, 'login refused')
  }

  const preConnect: AedesOptions['preConnect'] = (client, packet, done) => {
    // Sessions are ephemeral unless configured otherwise: a 3.1.1 client cannot be told an
    // expiry, so its clean=false is treated as clean; an MQTT 5 request is capped.
    let expiryClamped = false
    if (packet.protocolVersion === 5) {
      const requested = packet.properties?.sessionExpiryInterval ?? 0
      if (requested > opts.maxSessionExpiry) {
        packet.properties = { ...packet.properties, sessionExpiryInterval: opts.maxSessionExpiry }
        expiryClamped = true
      }
      if (opts.maxSessionExpiry === 0) packet.clean = true
    } else {
      packet.clean = true
    }
    pending.set(client, { will: packet.will, expiryClamped })
    done(null, true)
  }

  const authenticate: AedesOptions['authenticate'] = (client, username, password, done) => {
    const connect = pending.get(client) ?? { expiryClamped: false }
    pending.delete(client)
    login(opts.login, username, password).then((result) => {
      if (!result.ok) {
        loginFailed(client, result.reason, result.user)
        const code = result.reason === 'anonymous' ? RC_NOT_AUTHORIZED : RC_BAD_CREDENTIALS
        return done(authError(code, 'bad user name or password'), false)
      }
      const identity: Identity = {
        user: result.user,
        clientId: client.id,
        remoteAddress: remoteOf(client),
        certCN: certCommonName(client),
        hasWill: connect.will !== undefined
      }
      // The will is checked now, not when it fires: a will that would be refused later is
      // refused with the CONNECT so the device learns of it while it can still fix it.
      if (connect.will !== undefined) {
        const d = policy.decide(identity, 'publish', connect.will.topic)
        if (!d.allow) {
          denied(client, identity, 'will', connect.will.topic, d.reason)
          loginFailed(client, 'will_denied', result.user)
          return done(authError(RC_NOT_AUTHORIZED, 'will topic not authorized'), false)
        }
      }
      identities.set(client, identity)
      // [MQTT-3.2.2-3.2] tell a v5 client the Session Expiry we applied when it differs.
      if (connect.expiryClamped) (client as unknown as ClientInternals)._sessionExpiryClamped = true
      log.info({ event: 'login.ok', user: identity.user, clientId: client.id, remote: identity.remoteAddress, protocol: client.version, totpDelta: result.delta, certCN: identity.certCN }, 'login accepted')
      done(null, true)
    }, (err: unknown) => {
      // Never allow on a fault: the backend could not answer, so the server is unavailable.
      loginFailed(client, 'backend_unavailable', undefined)
      if (!isBackendFault(err)) log.error({ event: 'login.error', err }, 'unexpected login error')
      done(authError(RC_SERVER_UNAVAILABLE, 'server unavailable'), false)
    })
  }

  const authorizePublish: AedesOptions['authorizePublish'] = (client, packet, done) => {
    const identity = client === null ? undefined : identities.get(client)
    // Wills reach this hook too (publishWill); they have no `cmd`.
    const isWill = (packet as Partial<PublishPacket>).cmd === undefined
    if (isWill && packet.properties !== undefined && 'willDelayInterval' in packet.properties) {
      // aedes 2.0.0-beta.1 forwards the CONNECT-only Will Delay Interval inside the will
      // PUBLISH; strict MQTT 5 clients (paho) treat that as a protocol error and drop.
      const { willDelayInterval: _drop, ...rest } = packet.properties as Record<string, unknown>
      packet.properties = rest
    }
    if (identity === undefined || client === null) {
      done(new Error('not authorized'))
      return
    }
    const d = policy.decide(identity, 'publish', packet.topic)
    if (!d.allow) {
      denied(client, identity, isWill ? 'will' : 'publish', packet.topic, d.reason)
      done(new Error('not authorized'))
      return
    }
    if (isWill) log.info({ event: 'will.published', user: identity.user, clientId: client.id, topic: packet.topic, source: 'client' }, 'client will published')
    done(null)
  }

  const authorizeSubscribe: AedesOptions['authorizeSubscribe'] = (client, sub, done) => {
    const identity = identities.get(client)
    const d = identity === undefined ? { allow: false as const, reason: 'not logged in' } : policy.decide(identity, 'subscribe', sub.topic)
    if (!d.allow) {
      denied(client, identity, 'subscribe', sub.topic, d.reason)
      // A denial is a value: aedes answers SUBACK 0x87 (v5) / 0x80 (3.1.1). An error would
      // drop the connection.
      done(null, null)
      return
    }
    done(null, sub)
  }

  const authorizeForward: AedesOptions['authorizeForward'] = (client, packet) => {
    const identity = identities.get(client)
    if (identity === undefined) return null
    const d = policy.decide(identity, 'read', packet.topic)
    if (!d.allow) {
      denied(client, identity, 'read', packet.topic, d.reason)
      return null
    }
    return packet
  }

  function attach (broker: Aedes): void {
    broker.on('clientDisconnect', (client) => {
      const identity = identities.get(client)
      if (identity === undefined) return
      const clean = (client as unknown as ClientInternals)._disconnected === true
      const takenOver = (broker as unknown as BrokerInternals)._takingOver?.has(client.id) === true
      if (clean || takenOver || broker.closed) return
      log.info({ event: 'client.unclean_disconnect', user: identity.user, clientId: client.id, remote: identity.remoteAddress }, 'client dropped without DISCONNECT')
      if (identity.hasWill || opts.serverWillTopic === undefined) return
      const topic = opts.serverWillTopic(identity.user)
      const payload = JSON.stringify({ status: 'unsafe_disconnection', clientId: client.id, at: new Date().toISOString() })
      broker.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false }, (err) => {
        if (err) log.error({ event: 'will.failed', err, clientId: client.id }, 'server will not published')
        else log.info({ event: 'will.published', user: identity.user, clientId: client.id, topic, source: 'server' }, 'server will published')
      })
    })
    broker.on('clientError', (client, err) => {
      log.debug({ event: 'client.error', clientId: client.id, remote: remoteOf(client), err: err.message }, 'client error')
    })
    broker.on('connectionError', (client, err) => {
      log.debug({ event: 'connection.error', remote: remoteOf(client), err: err.message }, 'connection error')
    })
  }

  return {
    options: { preConnect, authenticate, authorizePublish, authorizeSubscribe, authorizeForward },
    attach,
    identityOf: (c) => identities.get(c)
  }
}
