import type { Client } from 'aedes'
import type { ClientIdBinding } from '../config/hardening.js'
import type { Logger } from '../log.js'
import type { UserStore } from '../stores/store.js'
import type { LoginFailure } from '../types.js'
import { credentialFingerprint } from './login.js'

/** Why a live session was ended (the `reason` of `session.revoked`). */
export type RevokeReason = 'disabled' | 'removed' | 'credentials_changed'

/** What a session was admitted as. */
export interface SessionGrant {
  readonly user: string
  readonly remote: string
  /** From the LoginResult; undefined (certificate-only identity, HTTP backend): never re-checked. */
  readonly fingerprint?: string
}

export interface SessionOptions {
  log: Logger
  /** auth.clientIdBinding; default `none`. */
  clientIdBinding?: ClientIdBinding
  /** Where live sessions' credentials are re-checked; undefined: they are not (HTTP backend). */
  store?: UserStore
  /** Seconds between re-checks (auth.recheckInterval); 0 or undefined: no periodic re-check. */
  recheckInterval?: number
  /** Told of each revoked session (metrics); must not throw. */
  onEvent?: (event: { type: 'revoked' }) => void
  /** Told the user of each revoked session (the credential cache forgets it); must not throw. */
  onRevoke?: (user: string) => void
}

/**
 * Who holds which client id, and whether each live session's credentials still stand. One per
 * broker: the hooks admit sessions into it, the composition root starts and closes it.
 */
export interface SessionRegistry {
  /**
   * Admits a logged-in client under its client id, or names why not. Synchronous on purpose:
   * of two logins racing for one id, the first to get here holds it.
   */
  admit (client: Client, grant: SessionGrant): LoginFailure | undefined
  /**
   * aedes registered `client` under its id (its 'client' event). Logins of one user racing for
   * one id are admitted in one order and may register in another; aedes keeps the last
   * registered (patches/aedes/0011), so that one is the holder re-checks must reach.
   */
  registered (client: Client): void
  /** Whether the client's session was ended by a re-check (its will must not be published). */
  isRevoked (client: Client): boolean
  /** Re-checks every live session against the store now; a store fault ends nobody's session. */
  recheck (): Promise<void>
  /** Starts the periodic re-check (auth.recheckInterval). */
  start (): void
  close (): void
}

interface Holder extends SessionGrant {
  /** undefined once the connection closed while its session lives on (MQTT 5 Session Expiry). */
  client?: Client
  /** For a session without a connection: when it expires (ms since epoch). */
  until: number
}

// Users looked up at once during a re-check: a large fleet must not take the whole store pool.
const RECHECK_CONCURRENCY = 4
const SWEEP_EVERY_MS = 60_000
// [MQTT-3.2.2.3.2] 0xFFFFFFFF: the session does not expire.
const NEVER_EXPIRES = 0xFFFFFFFF

/**
 * Whether `clientId` names `user` as auth.clientIdBinding asks. `prefix`: the user alone, or
 * followed by a character that is not a letter or digit (`iotclient01-sensor` for `iotclient01`),
 * so `sensor-1` cannot hold `sensor-10-kitchen`. `owner` is decided by the owners, not here.
 */
export function bindingAllows (mode: ClientIdBinding, clientId: string, user: string): boolean {
  if (mode === 'exact') return clientId === user
  if (mode === 'prefix') return clientId === user || (clientId.startsWith(user) && /^[^A-Za-z0-9]/.test(clientId.slice(user.length)))
  return true
}

export function createSessionRegistry (opts: SessionOptions): SessionRegistry {
  const { log, store } = opts
  const binding = opts.clientIdBinding ?? 'none'
  const holders = new Map<string, Holder>()
  const revoked = new WeakSet<Client>()
  const grants = new WeakMap<Client, SessionGrant>()
  let lastSweep = Date.now()
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  let closed = false
  let storeFailing = false

  function holds (h: Holder, now: number): boolean {
    if (h.client === undefined) return h.until > now
    // Closed, but its socket's close has not reached us yet: the session outlives it or not.
    return h.client.closed !== true || (h.client.sessionExpiryInterval ?? 0) > 0
  }

  /** The connection ended: the id stays held while the session may be resumed, else it is free. */
  function release (client: Client): void {
    const h = holders.get(client.id)
    if (h?.client !== client) return // taken over by the same user meanwhile: the new one holds it
    const expiry = client.sessionExpiryInterval ?? 0
    if (expiry <= 0 || revoked.has(client)) holders.delete(client.id)
    else holders.set(client.id, { ...h, client: undefined, until: expiry >= NEVER_EXPIRES ? Infinity : Date.now() + expiry * 1000 })
  }

  function sweep (now: number): void {
    if (now - lastSweep < SWEEP_EVERY_MS) return
    lastSweep = now
    for (const [id, h] of holders) if (!holds(h, now)) holders.delete(id)
  }

  function revoke (h: Holder, client: Client, reason: RevokeReason): void {
    if (client.closed || revoked.has(client)) return
    revoked.add(client)
    log.warn({ event: 'session.revoked', user: h.user, clientId: client.id, remote: h.remote, reason }, 'live session ended: its user was disabled, removed or given new credentials')
    opts.onEvent?.({ type: 'revoked' })
    opts.onRevoke?.(h.user)
    // [MQTT-3.14.2.1] 0x98 Administrative action; a 3.1.1 connection is closed.
    client.disconnect({ reasonCode: 0x98 }, () => {})
  }

  async function recheckNow (s: UserStore): Promise<void> {
    // Only sessions admitted before the first lookup: their logins read the store before it.
    const byUser = new Map<string, Array<[Holder, Client]>>()
    for (const h of holders.values()) {
      if (h.client === undefined || h.client.closed || h.fingerprint === undefined) continue
      const list = byUser.get(h.user) ?? []
      list.push([h, h.client])
      byUser.set(h.user, list)
    }
    const users = [...byUser.keys()]
    let next = 0
    let fault: unknown
    const worker = async (): Promise<void> => {
      while (fault === undefined && next < users.length && !closed) {
        const user = users[next++] as string
        let record
        try {
          record = await s.find(user)
        } catch (err) {
          // The store cannot answer: that says nothing about anyone's credentials.
          fault = err
          return
        }
        const current = record === undefined ? undefined : credentialFingerprint(record)
        for (const [h, client] of byUser.get(user) ?? []) {
          const reason: RevokeReason | undefined = record === undefined ? 'removed' : !record.enabled ? 'disabled' : current !== h.fingerprint ? 'credentials_changed' : undefined
          if (reason !== undefined && !closed) revoke(h, client, reason)
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(RECHECK_CONCURRENCY, users.length) }, worker))
    if (fault !== undefined && !storeFailing) {
      storeFailing = true
      log.warn({ event: 'store.recheck_failed', reason: (fault as Error).message }, 'live sessions not re-checked: the user store did not answer; they stay connected')
    } else if (fault === undefined && storeFailing && users.length > 0) {
      storeFailing = false
      log.info({ event: 'store.recheck_recovered' }, 'live sessions are re-checked again')
    }
  }

  const registry: SessionRegistry = {
    admit (client, grant) {
      if (!bindingAllows(binding, client.id, grant.user)) return 'clientid_binding'
      const now = Date.now()
      const held = holders.get(client.id)
      // Only the same user may take a session over; aedes then ends the old one (0x8E).
      if (held !== undefined && held.user !== grant.user && holds(held, now)) return 'clientid_taken'
      const conn = client.conn as Partial<NodeJS.EventEmitter & { destroyed: boolean }>
      // A socket that closed while the login was being checked has fired 'close' already:
      // holding it would keep the client until the next sweep (found by the fuzzer).
      if (client.closed || conn.destroyed === true) return undefined
      const kept: SessionGrant = { user: grant.user, remote: grant.remote, ...(grant.fingerprint === undefined ? {} : { fingerprint: grant.fingerprint }) }
      grants.set(client, kept)
      holders.set(client.id, { ...kept, client, until: Infinity })
      // The socket's close covers every way out: DISCONNECT, drop, takeover, refusal after login.
      if (typeof conn.once === 'function') conn.once('close', () => release(client))
      sweep(now)
      return undefined
    },
    registered (client) {
      const grant = grants.get(client)
      if (grant === undefined || client.closed || holders.get(client.id)?.client === client) return
      holders.set(client.id, { ...grant, client, until: Infinity })
    },
    isRevoked: (client) => revoked.has(client),
    async recheck () {
      if (store === undefined || closed) return
      // One round at a time: a slow store must not pile rounds up.
      running ??= recheckNow(store).finally(() => { running = undefined })
      await running
    },
    start () {
      const every = opts.recheckInterval ?? 0
      if (every <= 0 || store === undefined || timer !== undefined || closed) return
      timer = setInterval(() => { registry.recheck().catch((err: unknown) => log.error({ event: 'session.recheck_error', err }, 'unexpected re-check error')) }, every * 1000)
      timer.unref()
    },
    close () {
      closed = true
      clearInterval(timer)
      timer = undefined
    }
  }
  return registry
}
