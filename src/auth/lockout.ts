import type { LockoutConfig } from '../config/hardening.js'
import type { Logger } from '../log.js'
import { USERNAME_PATTERN, type LoginFailure } from '../types.js'
import type { Authenticator, LoginRequest, LoginResult, Screening } from './authenticator.js'
import { COUNTS, describe, ipKey, type LockoutScope, type SharedLockout, type Started } from './lockout-keys.js'
import { accountPart } from './login.js'

export { ipKey, type LockoutScope, type SharedLockout } from './lockout-keys.js'

export interface LockoutOptions extends LockoutConfig {
  log: Logger
  /** The MQTT username carries `|code` after the account (auth.totp.required, the http store). */
  splitCode: boolean
  /**
   * The login checks the code before the password (the store logins with auth.totp.required),
   * so a refusal tells what the attacker knew: only a wrong password behind a valid code counts
   * against the account everywhere; everything else counts against the account from that
   * address only. Off: every failure counts against the account everywhere.
   */
  codeFirst?: boolean
  /** Told of each lockout that starts (metrics); must not throw. */
  onLockout?: (scope: LockoutScope) => void
  /** Keys remembered per scope; the one that failed least recently is forgotten first. */
  maxKeys?: number
  now?: () => number
  /**
   * In a cluster: counts and lockouts every node shares. The local tables then only mirror
   * them, for the pre-TLS check (addressLocked) and to refuse a known lockout without asking.
   */
  shared?: SharedLockout
}

export interface Lockout {
  /** The outer layer: refuses locked-out attempts at once, counts the failures of the rest. */
  wrap (a: Authenticator): Authenticator
  /**
   * Refuses only, counts nothing: the layer behind the login queue, so an attempt that waited
   * for a slot sees the failures recorded meanwhile (concurrent guesses cannot overshoot the
   * threshold by more than the queue's concurrency).
   */
  recheck (a: Authenticator): Authenticator
  /** Whether an address is locked out now: its sockets can be closed before any TLS work. */
  addressLocked (remote: string): boolean
  /** Logs the end of every lockout that is over; a timer calls it, tests may too. */
  sweep (): void
  close (): void
}

const MAX_KEYS = 100_000
// Bounds the sweep to once a second however many lockouts end close together.
const MIN_SWEEP_MS = 1000

interface Entry {
  readonly scope: LockoutScope
  readonly key: string
  /** Times of failures inside the window; never longer than the threshold. */
  failures: number[]
  /** Lockouts in a row: the n-th lasts duration * 2^(n-1). */
  strikes: number
  /** End of the current or last lockout, ms; 0 if never locked. */
  lockedUntil: number
  /** A lockout started whose end is not logged yet. */
  endPending: boolean
  /** Who and where, as logged when the lockout started. */
  user?: string
  remote: string
}

/**
 * Brute-force lockout: failed logins counted per account (any address) and per source address
 * (any account) over a sliding window. Unknown accounts are counted exactly like real ones, so
 * neither the lockout nor its answer tells whether an account exists.
 */
export function createLockout (opts: LockoutOptions): Lockout {
  const { log } = opts
  const now = opts.now ?? Date.now
  const maxKeys = opts.maxKeys ?? MAX_KEYS
  const tables: Record<LockoutScope, Map<string, Entry>> = { user: new Map(), ip: new Map(), user_ip: new Map() }
  // An account from one address is held to the account's threshold: the owner elsewhere is not.
  const thresholds: Record<LockoutScope, number> = { user: opts.maxFailuresPerUser, ip: opts.maxFailuresPerIp, user_ip: opts.maxFailuresPerUser }
  const locked = new Set<Entry>()
  let timer: NodeJS.Timeout | undefined
  let timerAt = Infinity
  let closed = false

  /** The account an attempt is for, compared without case: a MySQL column usually ignores it. */
  function accountOf (username: string | undefined): { key: string; name: string } | undefined {
    if (username === undefined) return undefined
    const name = opts.splitCode ? accountPart(username) : username
    // Anything else can never log in, and an unbounded name must not become a key.
    return USERNAME_PATTERN.test(name) ? { key: name.toLowerCase(), name } : undefined
  }

  function ended (e: Entry, evicted = false): void {
    e.endPending = false
    locked.delete(e)
    log.info({ event: 'auth.lockout_ended', scope: e.scope, user: e.user, remote: e.scope === 'user' ? undefined : e.remote, ...(evicted ? { evicted } : {}) },
      `login lockout of ${describe(e.scope, e.user, e.remote)} ended`)
  }

  /** The entry for a key that is locked right now; logs a lockout's end when it is first seen over. */
  function lockedEntry (scope: LockoutScope, key: string | undefined): Entry | undefined {
    if (key === undefined || thresholds[scope] === 0) return undefined
    const e = tables[scope].get(key)
    if (e === undefined) return undefined
    if (e.lockedUntil > now()) return e
    if (e.endPending) ended(e)
    return undefined
  }

  function schedule (at: number): void {
    if (closed || at >= timerAt) return
    clearTimeout(timer)
    timerAt = at
    timer = setTimeout(sweep, Math.max(at - now(), MIN_SWEEP_MS))
    // The lockout must not keep a process alive that has nothing else to do.
    timer.unref()
  }

  function sweep (): void {
    clearTimeout(timer)
    timer = undefined
    timerAt = Infinity
    const t = now()
    let next = Infinity
    for (const e of locked) {
      if (e.lockedUntil <= t) ended(e)
      else next = Math.min(next, e.lockedUntil)
    }
    if (next < Infinity) schedule(Math.max(next, t + MIN_SWEEP_MS))
  }

  /** Starts a lockout of `ms`, counted here or by the cluster; logged once, by the node that started it. */
  function begin (e: Entry, user: string | undefined, remote: string, { failures, ms }: Started): void {
    e.lockedUntil = now() + ms
    // The failures that caused this lockout are spent: after it, the next one needs a fresh threshold.
    e.failures = []
    e.endPending = true
    e.user = user
    e.remote = remote
    locked.add(e)
    const seconds = Math.round(ms / 1000)
    log.warn({ event: 'auth.lockout', scope: e.scope, user, remote, failures, seconds, until: new Date(e.lockedUntil).toISOString() },
      `login lockout of ${describe(e.scope, user, remote)} for ${seconds} s after ${failures} failed logins`)
    opts.onLockout?.(e.scope)
    schedule(e.lockedUntil)
  }

  /** The key's entry, made the most recently failed; the least recently failed goes past maxKeys. */
  function entryFor (scope: LockoutScope, key: string, remote: string): Entry {
    const table = tables[scope]
    const e = table.get(key) ?? { scope, key, failures: [], strikes: 0, lockedUntil: 0, endPending: false, remote }
    table.delete(key) // re-inserted: the map's order is least recently failed first
    table.set(key, e)
    if (table.size > maxKeys) {
      const [oldestKey, oldest] = table.entries().next().value as [string, Entry]
      table.delete(oldestKey)
      if (oldest.endPending) ended(oldest, true)
    }
    return e
  }

  function fail (scope: LockoutScope, key: string | undefined, user: string | undefined, remote: string): void {
    const threshold = thresholds[scope]
    if (key === undefined || threshold === 0) return
    const t = now()
    // A lockout that began while this attempt was being checked already counts it.
    if ((tables[scope].get(key)?.lockedUntil ?? 0) > t) return
    const e = entryFor(scope, key, remote)
    const from = t - opts.window * 1000
    e.failures = e.failures.filter((at) => at > from)
    e.failures.push(t)
    if (e.failures.length < threshold) return
    const maxMs = opts.maxDuration * 1000
    // A key quiet for maxDuration since its last lockout starts the doubling again.
    if (e.lockedUntil > 0 && t - e.lockedUntil >= maxMs) e.strikes = 0
    e.strikes = Math.min(e.strikes + 1, 32)
    begin(e, user, remote, { failures: e.failures.length, ms: Math.min(opts.duration * 2 ** (e.strikes - 1), opts.maxDuration) * 1000 })
  }

  /** As fail(), counted by the cluster; the node whose failure crossed the threshold logs the lockout. */
  async function failShared (shared: SharedLockout, scope: LockoutScope, key: string | undefined, user: string | undefined, remote: string): Promise<void> {
    const threshold = thresholds[scope]
    if (key === undefined || threshold === 0) return
    const started = await shared.fail(scope, key, threshold)
    if (started !== undefined) begin(entryFor(scope, key, remote), user, remote, started)
  }

  /** A lockout another node started (or found in the cluster at a login): mirrored, not logged. */
  function mirror (scope: LockoutScope, key: string, ms: number): void {
    if (thresholds[scope] === 0 || ms <= 0) return
    const until = now() + ms
    const known = tables[scope].get(key)
    if (known !== undefined && known.lockedUntil >= until) return
    entryFor(scope, key, scope === 'ip' ? key : '').lockedUntil = until
  }

  const pairKey = (account: { key: string } | undefined, remote: string): string | undefined =>
    account === undefined ? undefined : `${account.key}\u0000${ipKey(remote)}`

  function keysOf (req: LoginRequest): Array<readonly [LockoutScope, string | undefined]> {
    const account = accountOf(req.username)
    return [['user', account?.key], ['ip', ipKey(req.remoteAddress)], ['user_ip', pairKey(account, req.remoteAddress)]]
  }

  function refused (req: LoginRequest): LoginResult {
    const account = accountOf(req.username)
    // The same answer for real and unknown accounts: only the name the client sent.
    return account === undefined ? { ok: false, reason: 'locked_out' } : { ok: false, reason: 'locked_out', user: account.name }
  }

  /** Locked out as this node knows (its own lockouts and those mirrored): answered without waiting. */
  function refusal (req: LoginRequest): LoginResult | undefined {
    return keysOf(req).every(([scope, key]) => lockedEntry(scope, key) === undefined) ? undefined : refused(req)
  }

  /**
   * Locked out anywhere in the cluster: asked at every login, so a lockout another node started
   * holds here however late its message arrives. A Redis that cannot answer throws (0x88).
   */
  async function refusalNow (req: LoginRequest): Promise<LoginResult | undefined> {
    const local = refusal(req)
    if (local !== undefined || opts.shared === undefined) return local
    const keys = keysOf(req).filter((k): k is readonly [LockoutScope, string] => k[1] !== undefined && thresholds[k[0]] > 0)
    const left = await opts.shared.remaining(keys)
    keys.forEach(([scope, key], i) => mirror(scope, key, left[i] ?? 0))
    return left.some((ms) => ms > 0) ? refused(req) : undefined
  }

  /** Counts a refused login against its keys (see codeFirst). */
  async function counted (req: LoginRequest, reason: LoginFailure): Promise<void> {
    if (!COUNTS[reason]) return
    const account = accountOf(req.username)
    // With the code checked first, only a wrong password behind a valid code shows the TOTP
    // secret is known: that alone may lock the account for everyone, the owner too. Anything
    // else is a guess anyone can make, and must not be a lockout button.
    const [scope, key] = opts.codeFirst !== true || reason === 'bad_password' ? ['user', account?.key] as const : ['user_ip', pairKey(account, req.remoteAddress)] as const
    const shared = opts.shared
    if (shared === undefined) {
      fail(scope, key, account?.name, req.remoteAddress)
      fail('ip', ipKey(req.remoteAddress), undefined, req.remoteAddress)
      return
    }
    try {
      await failShared(shared, scope, key, account?.name, req.remoteAddress)
      await failShared(shared, 'ip', ipKey(req.remoteAddress), undefined, req.remoteAddress)
    } catch {
      // The login is refused anyway; the next one asks the cluster first and gets 0x88 while
      // it cannot answer, so a failure left uncounted buys no guess.
    }
  }

  opts.shared?.onRemote(mirror)

  function close (): void {
    closed = true
    clearTimeout(timer)
    timer = undefined
  }

  return {
    wrap (a) {
      return {
        name: a.name,
        async login (req) {
          const locked = await refusalNow(req)
          if (locked !== undefined) return locked
          const result = await a.login(req)
          if (result.ok) {
            const account = accountOf(req.username)
            // The account's owner proved the password: its earlier failures were typos.
            for (const [scope, key] of [['user', account?.key], ['user_ip', pairKey(account, req.remoteAddress)]] as const) {
              if (key === undefined) continue
              opts.shared?.clear(scope, key)
              const e = tables[scope].get(key)
              if (e !== undefined && e.lockedUntil <= now()) {
                if (e.endPending) ended(e)
                tables[scope].delete(e.key)
              }
            }
          } else {
            await counted(req, result.reason)
          }
          return result
        },
        async close () {
          close()
          await a.close?.()
        }
      }
    },
    recheck (a) {
      const screen = a.screen?.bind(a)
      return {
        name: a.name,
        async login (req) {
          return await refusalNow(req) ?? await a.login(req)
        },
        // The re-check runs where the slow part starts: after the queue's wait, before bcrypt.
        ...(screen === undefined
          ? {}
          : {
              async screen (req: LoginRequest): Promise<Screening> {
                const s = await screen(req)
                if ('result' in s) return s
                return { ...s, verify: async () => await refusalNow(req) ?? await s.verify() }
              }
            }),
        async close () {
          await a.close?.()
        }
      }
    },
    addressLocked: (remote) => lockedEntry('ip', ipKey(remote)) !== undefined,
    sweep,
    close
  }
}
