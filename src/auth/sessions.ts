import type { Client } from 'aedes'
import type { ClientIdBinding } from '../config/hardening.js'
import type { Logger } from '../log.js'
import type { UserStore } from '../stores/store.js'
import type { LoginFailure } from '../types.js'
import { credentialFingerprint } from './login.js'

/** Why a live session was ended (the `reason` of `session.revoked`). */
export type RevokeReason = 'disabled' | 'removed' | 'credentials_changed'

/**
 * Who holds which client id on the other nodes of a cluster (cluster/client-id-holders.ts): the
 * same rule as one node's holders, kept where every node sees it.
 */
export interface SharedHolders {
  /**
   * Holds `clientId` for `user` on this node, atomically across nodes: undefined when it was free
   * or `user`'s already (the other node then ends its connection, 0x8E), else the user that holds
   * it. Throws BASTION_ERR_BACKEND_UNAVAILABLE when it cannot tell.
   */
  hold (clientId: string, user: string): Promise<string | undefined>
  /** This node's connection for the id ended: frees it, or keeps it `keepSeconds` (a session that may be resumed). Never throws. */
  release (clientId: string, user: string, keepSeconds: number): void
  /** Keeps the ids of this node's live connections from expiring; called every `refreshMs`. Never throws. */
  refresh (held: Array<[clientId: string, user: string]>): void
  readonly refreshMs: number
}

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
  /** In a cluster: holders on the other nodes (see share()). */
  shared?: SharedHolders
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
   * In a cluster, after admit(): holds the id on every node, or undoes this node's hold and
   * names why not. Throws (the hold undone) when the shared holders cannot answer.
   */
  share (client: Client, grant: SessionGrant): Promise<LoginFailure | undefined>
  /**
   * aedes registered `client` under its id (its 'client' event). Logins of one user racing for
   * one id are admitted in one order and may register in another; aedes keeps the last
   * registered (patches/aedes/0011), so that one is the holder re-checks must reach.
   */
  registered (client: Client): void
  /** Whether the client's session was ended by a re-check or endAll (its will must not be published). */
  isRevoked (client: Client): boolean
  /**
   * Re-checks every live session against the store now (or, with `user`, that user's); a store
   * fault ends nobody's session.
   */
  recheck (user?: string): Promise<void>
  /**
   * Ends every live session here (the cluster's Redis is gone: what they publish would be lost)
   * with DISCONNECT 0x89 Server busy; their wills are not published (they could not be routed).
   */
  endAll (): void
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
  const { log, store, shared } = opts
  const binding = opts.clientIdBinding ?? 'none'
  const holders = new Map<string, Holder>()
  const revoked = new WeakSet<Client>()
  // Ended by endAll(): no will, but their sessions stay theirs to resume.
  const told = new WeakSet<Client>()
  // The holder each admitted client was given (the same object `holders` maps its id to), so
  // registered() can put it back: one object per session, not a grant and a holder.
  const grants = new WeakMap<Client, Holder>()
  let lastSweep = Date.now()
  let timer: NodeJS.Timeout | undefined
  let refresher: NodeJS.Timeout | undefined
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
    const keep = expiry <= 0 || revoked.has(client) ? 0 : expiry
    if (keep === 0) holders.delete(client.id)
    else holders.set(client.id, { ...h, client: undefined, until: expiry >= NEVER_EXPIRES ? Infinity : Date.now() + expiry * 1000 })
    // Sent on the connection the hold went out on, so it runs after it even when the socket
    // closed while the hold was on its way; it frees only this node's own hold.
    shared?.release(client.id, h.user, keep)
  }

  /**
   * Undoes admit() for a client the cluster refused (the close that follows releases nothing),
   * also when its socket closed while the cluster was asked and left a session kept for it.
   */
  function unhold (client: Client, user: string): void {
    const h = holders.get(client.id)
    if (h !== undefined && (h.client === client || (h.client === undefined && h.user === user))) holders.delete(client.id)
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

  async function recheckNow (s: UserStore, only?: string): Promise<void> {
    // Only sessions admitted before the first lookup: their logins read the store before it.
    const byUser = new Map<string, Array<[Holder, Client]>>()
    for (const h of holders.values()) {
      if (h.client === undefined || h.client.closed || h.fingerprint === undefined || (only !== undefined && h.user.toLowerCase() !== only)) continue
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
      const holder: Holder = { user: grant.user, remote: grant.remote, ...(grant.fingerprint === undefined ? {} : { fingerprint: grant.fingerprint }), client, until: Infinity }
      grants.set(client, holder)
      holders.set(client.id, holder)
      // The socket's close covers every way out: DISCONNECT, drop, takeover, refusal after login.
      // `on`, not `once`: a socket closes once, and once() would add a wrapper per connection;
      // a second 'close' would find the id no longer this client's and release nothing.
      if (typeof conn.on === 'function') conn.on('close', () => release(client))
      sweep(now)
      return undefined
    },
    async share (client, grant) {
      // Nothing held here: the login was refused, or its socket closed meanwhile.
      if (shared === undefined || holders.get(client.id)?.client !== client) return undefined
      let other: string | undefined
      try {
        other = await shared.hold(client.id, grant.user)
      } catch (err) {
        unhold(client, grant.user)
        throw err
      }
      if (other === undefined) return undefined
      unhold(client, grant.user)
      return 'clientid_taken'
    },
    registered (client) {
      const holder = grants.get(client)
      if (holder === undefined || client.closed || holders.get(client.id)?.client === client) return
      // Holders are replaced, never changed: this is still the one admit() made for `client`.
      holders.set(client.id, holder)
    },
    isRevoked: (client) => revoked.has(client) || told.has(client),
    endAll () {
      let ended = 0
      for (const h of holders.values()) {
        const client = h.client
        if (client === undefined || client.closed || revoked.has(client) || told.has(client)) continue
        told.add(client)
        ended++
        // [MQTT-3.14.2.1] 0x89 Server busy: reconnect later (there is no DISCONNECT 0x88).
        client.disconnect({ reasonCode: 0x89 }, () => {})
      }
      log.warn({ event: 'cluster.clients_disconnected', clients: ended }, 'Redis is unreachable: connected clients told to reconnect later (DISCONNECT 0x89)')
    },
    async recheck (user) {
      if (store === undefined || closed) return
      // One user's re-check (a revocation told by another node) is one lookup: it runs at once.
      if (user !== undefined) { await recheckNow(store, user.toLowerCase()); return }
      // One round at a time: a slow store must not pile rounds up.
      running ??= recheckNow(store).finally(() => { running = undefined })
      await running
    },
    start () {
      if (shared !== undefined && refresher === undefined && !closed) {
        refresher = setInterval(() => {
          const live: Array<[string, string]> = []
          for (const [id, h] of holders) if (h.client !== undefined && h.client.closed !== true) live.push([id, h.user])
          shared.refresh(live)
        }, shared.refreshMs)
        refresher.unref()
      }
      const every = opts.recheckInterval ?? 0
      if (every <= 0 || store === undefined || timer !== undefined || closed) return
      timer = setInterval(() => { registry.recheck().catch((err: unknown) => log.error({ event: 'session.recheck_error', err }, 'unexpected re-check error')) }, every * 1000)
      timer.unref()
    },
    close () {
      closed = true
      clearInterval(timer)
      clearInterval(refresher)
      timer = undefined
    }
  }
  return registry
}
