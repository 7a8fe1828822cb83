import type { EventEmitter } from 'node:events'
import type { Aedes, AedesOptions, Client, ConnectPacket, PublishPacket } from 'aedes'
import mqttPacket from 'mqtt-packet'
import type { AclPolicy } from '../acl/policy.js'
import { BastionError } from '../errors.js'
import type { LogGateOptions } from '../log-gate.js'
import type { CertificateIdentity } from '../config/schema.js'
import type { Logger } from '../log.js'
import type { Action, Decision, Identity, LoginFailure } from '../types.js'
import type { ClientIdOwners } from '../stores/store.js'
import type { Authenticator, LoginResult } from './authenticator.js'
import { certCommonName, certificateLogin } from './certificate-identity.js'
import { accountGroup, addressGroup, createRefusalLog, remoteOf, shownId } from './refusal-log.js'
export { LOGIN_FAILURES_LOGGED } from './refusal-log.js'
import { createSessionRegistry, type SessionRegistry } from './sessions.js'
import { isBackendFault } from './login.js'
import { serverWillPacket } from './server-will.js'

export interface HookOptions {
  authenticator: Authenticator
  policy: AclPolicy
  /** Client ids must start with one of these; empty: any (Mosquitto's clientid_prefixes). */
  clientIdPrefixes: readonly string[]
  /** auth.clientIdBinding owner: who each client id belongs to; absent: ids are not owned. */
  clientIdOwners?: ClientIdOwners
  /** How the listener a socket arrived on turns its client certificate into a user. */
  certificateIdentity: (socket: unknown) => CertificateIdentity
  log: Logger
  /** Topic for the server will of a client that had none; undefined turns it off. */
  serverWillTopic?: (user: string) => string
  /** Told of each login, refusal and delivery (metrics); must not throw. */
  onEvent?: (event: HookEvent) => void
  /** Who holds which client id (takeover, auth.clientIdBinding, revocation); default: a registry without re-checks. */
  sessions?: SessionRegistry
  /** Window (default a minute) and clock of the gated log lines; tests may replace them. */
  logGate?: Pick<LogGateOptions, 'windowMs' | 'now'>
}

/**
 * What the hooks report besides their log lines: bounded categories only, never a user name,
 * client id or topic, so a metrics label built from one cannot grow without end or leak who.
 */
export type HookEvent =
  | { type: 'login.ok'; totpDelta?: number }
  | { type: 'login.failed'; reason: LoginFailure }
  | { type: 'acl.denied'; action: Action | 'will' }
  /** A message passed the read check and goes to a subscriber (aedes has no delivery event). */
  | { type: 'delivery' }
  /** An account (`user`) or an address (`ip`) was locked out after repeated failed logins. */
  | { type: 'lockout'; scope: 'user' | 'ip' | 'user_ip' }
  /** A limit refused a connection, packet or client (`limit` is a fixed name, e.g. `publish_rate`). */
  | { type: 'limit'; limit: string }
  /** A live session was ended because its user was disabled, removed or given new credentials. */
  | { type: 'revoked' }
  /** A password was checked: by bcrypt (or a Mosquitto hash), or found in the credential cache. */
  | { type: 'password_check'; cached: boolean }

// MQTT 3.1.1 CONNACK return codes; aedes maps them to the MQTT 5 reason codes in brackets.
const RC_IDENTIFIER_REJECTED = 2 // [0x85]
const RC_SERVER_UNAVAILABLE = 3 // [0x88]
const RC_BAD_CREDENTIALS = 4 // [0x86]
const RC_NOT_AUTHORIZED = 5 // [0x87]

/** What a CONNECT carried that the authenticate hook needs but aedes does not pass to it. */
interface PendingConnect { will?: ConnectPacket['will'] }

/** One event object for every delivery: this runs once per message and subscriber. */
const DELIVERY: HookEvent = Object.freeze({ type: 'delivery' })

/**
 * A refused PUBLISH. aedes turns an error's message into the MQTT 5 PUBACK/PUBREC Reason String;
 * 0x87 already says "not authorized", so, as Mosquitto, the code goes alone (the refusal is
 * logged as acl.denied).
 */
function publishDenied (): Error {
  return new Error('')
}

type AuthError = Error & { returnCode: 2 | 3 | 4 | 5 }
function authError (returnCode: AuthError['returnCode'], message: string): AuthError {
  return Object.assign(new Error(message), { returnCode })
}

/** Fields of aedes 2.0.0-beta.1 clients and brokers that have no public accessor (pinned, tested). */
interface ClientInternals { _disconnected?: boolean }
interface BrokerInternals { _takingOver?: Set<string> }

/**
 * CONNACK 0x89 "Server busy" (MQTT 5) / 3 "Server unavailable" (3.1.1). aedes 2.0.0-beta.1 lets
 * the authenticate hook pick only the 3.1.1 codes 2-5, so the v5 CONNACK is written here, as
 * aedes writes its own DISCONNECTs (write, then close in the write callback); the client is
 * closed before aedes is answered, and aedes then sends nothing more.
 */
function refuseBusy (client: Client, done: (err: AuthError, ok: boolean) => void): void {
  if (client.version !== 5) {
    done(authError(RC_SERVER_UNAVAILABLE, 'server busy'), false)
    return
  }
  const connack = mqttPacket.generate({ cmd: 'connack', sessionPresent: false, reasonCode: 0x89 }, { protocolVersion: 5 })
  client.conn.write(connack, () => {
    client.close(() => done(authError(RC_SERVER_UNAVAILABLE, 'server busy'), false))
  })
}

/**
 * The one adapter between aedes and our decisions: login results and ACL decisions become
 * CONNACK / SUBACK / PUBACK codes here, and every refusal is counted and logged here, once; a
 * refusal a client can repeat at will, once per key and minute (the rest counted in `suppressed`).
 */
export function createHooks (opts: HookOptions): {
  options: Partial<AedesOptions>
  attach: (broker: Aedes) => void
  identityOf: (c: Client) => Identity | undefined
  /** Counts and logs (gated) a refused login; for refusals made outside these hooks (the limits'). */
  loginFailed: (client: Client, reason: LoginFailure, user?: string) => void
} {
  const { log, policy } = opts
  const emit = opts.onEvent ?? (() => {})
  const identities = new WeakMap<Client, Identity>()
  const pending = new WeakMap<Client, PendingConnect>()
  const sessions = opts.sessions ?? createSessionRegistry({ log })
  // Every line a client can make us write at will: once per key and minute (refusal-log.ts).
  const { denied, loginFailed, debugGated } = createRefusalLog({ log, emit, ...(opts.logGate === undefined ? {} : { logGate: opts.logGate }) })

  // Session lifetimes are the engine's (src/bastion.ts): with sessions.maxExpiry 0 aedes runs
  // with ephemeralSessions (patches/aedes/0023: every expiry 0, no session resumed), above 0
  // with sessionExpiryIntervalLimit (0010), and tells a v5 client the expiry it applied.
  const preConnect: AedesOptions['preConnect'] = (client, packet, done) => {
    pending.set(client, { will: packet.will })
    done(null, true)
  }

  /** Asks the policy; a backend that cannot answer is a deny (logged), never an allow. */
  async function decide (identity: Identity, action: Action, topic: string): Promise<Decision> {
    return await decideNow(identity, action, topic)
  }
  function unanswered (err: unknown): Decision {
    if (!isBackendFault(err)) log.error({ event: 'acl.error', err }, 'unexpected ACL error')
    return { allow: false, reason: 'acl backend unavailable' }
  }
  /**
   * As `decide`, but a policy that answers at once is answered at once: no Promise and no
   * microtask per PUBLISH on the path every message takes.
   */
  function decideNow (identity: Identity, action: Action, topic: string): Decision | Promise<Decision> {
    let answer: Decision | Promise<Decision>
    try {
      answer = policy.decide(identity, action, topic)
    } catch (err) {
      return unanswered(err)
    }
    return answer instanceof Promise ? answer.catch(unanswered) : answer
  }

  /** Who the client is: from the certificate alone, or a login (bound to the certificate's CN). */
  async function identify (client: Client, mode: CertificateIdentity, username: string | undefined, password: Buffer | undefined): Promise<LoginResult> {
    return certificateLogin(client.conn, mode, username) ??
      await opts.authenticator.login({ username, password, clientId: client.id, remoteAddress: remoteOf(client) })
  }

  const authenticate: AedesOptions['authenticate'] = (client, username, password, done) => {
    const connect: PendingConnect = pending.get(client) ?? {}
    pending.delete(client)
    if (opts.clientIdPrefixes.length > 0 && !opts.clientIdPrefixes.some((p) => client.id.startsWith(p))) {
      loginFailed(client, 'clientid_rejected', undefined)
      done(authError(RC_IDENTIFIER_REJECTED, 'client identifier not valid'), false)
      return
    }
    const mode = opts.certificateIdentity(client.conn)
    identify(client, mode, username, password).then(async (result) => {
      if (!result.ok) {
        loginFailed(client, result.reason, result.user)
        const code = result.reason === 'anonymous' ? RC_NOT_AUTHORIZED : RC_BAD_CREDENTIALS
        return done(authError(code, 'bad user name or password'), false)
      }
      const identity: Identity = {
        user: result.user,
        clientId: client.id,
        remoteAddress: remoteOf(client),
        certCN: certCommonName(client.conn),
        hasWill: connect.will !== undefined,
        // With a certificate identity the certificate names the user, as Mosquitto replaces the
        // username: a backend must never see (and authorize) what the client typed instead.
        ...(mode === 'cn' || mode === 'subject' ? { mqttUsername: result.user } : username === undefined ? {} : { mqttUsername: username })
      }
      // The will is checked now, not when it fires: a will that would be refused later is
      // refused with the CONNECT so the device learns of it while it can still fix it.
      if (connect.will !== undefined) {
        const d = await decide(identity, 'publish', connect.will.topic)
        if (!d.allow) {
          denied(client, identity, 'will', connect.will.topic, d.reason)
          loginFailed(client, 'will_denied', result.user)
          return done(authError(RC_NOT_AUTHORIZED, 'will topic not authorized'), false)
        }
      }
      // An id the server assigned (an empty CONNECT client id) is nobody's to squat.
      if (opts.clientIdOwners !== undefined && (client as unknown as { _assignedClientId?: string })._assignedClientId === undefined) {
        const owner = await opts.clientIdOwners.bind(client.id, identity.user)
        if (owner.toLowerCase() !== identity.user.toLowerCase()) {
          loginFailed(client, 'clientid_owned', result.user)
          return done(authError(RC_IDENTIFIER_REJECTED, 'client identifier not valid'), false)
        }
      }
      // After the last await: of two logins racing for one id on this node, the first to get
      // here holds it; across nodes, the first whose hold reaches the cluster (share()).
      const grant = { user: identity.user, remote: identity.remoteAddress, ...(result.fingerprint === undefined ? {} : { fingerprint: result.fingerprint }) }
      const refusal = sessions.admit(client, grant) ?? await sessions.share(client, grant)
      if (refusal !== undefined) {
        loginFailed(client, refusal, result.user)
        return done(authError(RC_IDENTIFIER_REJECTED, 'client identifier not valid'), false)
      }
      identities.set(client, identity)
      emit(result.delta === undefined ? { type: 'login.ok' } : { type: 'login.ok', totpDelta: result.delta })
      log.info({ event: 'login.ok', user: identity.user, clientId: client.id, remote: identity.remoteAddress, protocol: client.version, totpDelta: result.delta, certCN: identity.certCN }, 'login accepted')
      done(null, true)
    }).catch((err: unknown) => {
      if (err instanceof BastionError && err.code === 'BASTION_ERR_BUSY') {
        loginFailed(client, 'server_busy', undefined)
        refuseBusy(client, done)
        return
      }
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
    // A revoked user's will (or last packets) is not published on its behalf.
    if (identity === undefined || client === null || sessions.isRevoked(client)) {
      done(publishDenied())
      return
    }
    const who = client
    const publishDecided = (d: Decision): void => {
      if (!d.allow) {
        denied(who, identity, isWill ? 'will' : 'publish', packet.topic, d.reason)
        done(publishDenied())
        return
      }
      if (isWill) log.info({ event: 'will.published', user: identity.user, clientId: who.id, topic: packet.topic, source: 'client' }, 'client will published')
      done(null)
    }
    const answer = decideNow(identity, 'publish', packet.topic)
    if (answer instanceof Promise) answer.then(publishDecided, done)
    else publishDecided(answer)
  }

  const authorizeSubscribe: AedesOptions['authorizeSubscribe'] = (client, sub, done) => {
    const identity = identities.get(client)
    const decision = identity === undefined ? Promise.resolve<Decision>({ allow: false, reason: 'not logged in' }) : decide(identity, 'subscribe', sub.topic)
    decision.then((d) => {
      if (!d.allow) {
        denied(client, identity, 'subscribe', sub.topic, d.reason)
        // A denial is a value: aedes answers SUBACK 0x87 (v5) / 0x80 (3.1.1). An error would
        // drop the connection.
        done(null, null)
        return
      }
      done(null, sub)
    }, (err: Error) => done(err, null))
  }

  const authorizeForward: AedesOptions['authorizeForward'] = (client, packet) => {
    const identity = identities.get(client)
    if (identity === undefined) return null
    let d: Decision
    try {
      const answer = policy.decide(identity, 'read', packet.topic)
      // The forward hook is synchronous: a policy that cannot answer at once does not deliver.
      d = answer instanceof Promise ? { allow: false, reason: 'read check must be synchronous' } : answer
    } catch {
      d = { allow: false, reason: 'acl backend unavailable' }
    }
    if (!d.allow) {
      // Policies that grant broad subscriptions and filter at delivery (Mosquitto's acl_file)
      // refuse one delivery per message per subscriber: gated like every denial.
      denied(client, identity, 'read', packet.topic, d.reason)
      return null
    }
    // The last check before aedes writes the PUBLISH to the subscriber's socket.
    emit(DELIVERY)
    return packet
  }

  function attach (broker: Aedes): void {
    broker.on('client', (client) => { sessions.registered(client) })
    broker.on('clientDisconnect', (client) => {
      const identity = identities.get(client)
      if (identity === undefined) return
      const clean = (client as unknown as ClientInternals)._disconnected === true
      const takenOver = (broker as unknown as BrokerInternals)._takingOver?.has(client.id) === true
      if (clean || takenOver || broker.closed || sessions.isRevoked(client)) return
      log.info({ event: 'client.unclean_disconnect', user: identity.user, clientId: client.id, remote: identity.remoteAddress }, 'client dropped without DISCONNECT')
      if (identity.hasWill || opts.serverWillTopic === undefined) return
      const topic = opts.serverWillTopic(identity.user)
      broker.publish(serverWillPacket(topic, client.id), (err) => {
        if (err) log.error({ event: 'will.failed', err, clientId: client.id }, 'server will not published')
        else log.info({ event: 'will.published', user: identity.user, clientId: client.id, topic, source: 'server' }, 'server will published')
      })
    })
    // Malformed packets cost the client only a reconnect: one line per address and minute.
    broker.on('clientError', (client, err) => {
      const remote = remoteOf(client)
      // Also a CONNECT refused for its client id's length: only the start of the id.
      debugGated('client.error', addressGroup(remote), '', { clientId: shownId(client.id), remote, err: err.message }, 'client error')
    })
    broker.on('connectionError', (client, err) => {
      const remote = remoteOf(client)
      debugGated('connection.error', addressGroup(remote), '', { remote, err: err.message }, 'connection error')
    })
    // [MQTT-3.1.2-25] a delivery larger than the Maximum Packet Size the client asked for is
    // dropped by aedes (patches/aedes/0005); the client chose that, so debug only.
    ;(broker as unknown as EventEmitter).on('packetTooLargeForClient', (client: Client, packet: PublishPacket) => {
      const user = identities.get(client)?.user
      debugGated('delivery.too_large', user === undefined ? addressGroup(remoteOf(client)) : accountGroup(user), client.id,
        { clientId: client.id, topic: packet.topic, max: client.maximumPacketSize }, 'delivery dropped: larger than the client\'s Maximum Packet Size')
    })
  }

  return {
    options: { preConnect, authenticate, authorizePublish, authorizeSubscribe, authorizeForward },
    attach,
    identityOf: (c) => identities.get(c),
    loginFailed
  }
}
