// The lockout's per-node tables: failures counted per key over the sliding window, lockouts
// started (doubling per strike), mirrored from the cluster, and their ends logged by a timer.
// auth/lockout.ts decides which keys a login counts against and puts this in front of a login.
import type { Logger } from '../log.js'
import { describe, type LockoutScope, type SharedLockout, type Started } from './lockout-keys.js'
import type { LockoutConfig } from '../config/hardening.js'

// Bounds the sweep to once a second however many lockouts end close together.
const MIN_SWEEP_MS = 1000

export interface Entry {
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

export interface LockoutTableOptions extends LockoutConfig {
  log: Logger
  now: () => number
  maxKeys: number
  onLockout?: (scope: LockoutScope) => void
}

export interface LockoutTable {
  /** The entry for a key that is locked right now; logs a lockout's end when it is first seen over. */
  lockedEntry (scope: LockoutScope, key: string | undefined): Entry | undefined
  /** Counts a failure here; a lockout starts at the scope's threshold. */
  fail (scope: LockoutScope, key: string | undefined, user: string | undefined, remote: string): void
  /** As fail(), counted by the cluster; the node whose failure crossed the threshold logs the lockout. */
  failShared (shared: SharedLockout, scope: LockoutScope, key: string | undefined, user: string | undefined, remote: string): Promise<void>
  /** A lockout another node started (or found in the cluster at a login): mirrored, not logged. */
  mirror (scope: LockoutScope, key: string, ms: number): void
  /** Forgets a key's failures after a success (a lockout still running stays). */
  forgive (scope: LockoutScope, key: string): void
  /** Whether the scope is counted at all (a threshold of 0 turns it off). */
  counts (scope: LockoutScope): boolean
  sweep (): void
  close (): void
}

export function createLockoutTable (opts: LockoutTableOptions): LockoutTable {
  const { log, now, maxKeys } = opts
  const tables: Record<LockoutScope, Map<string, Entry>> = { user: new Map(), ip: new Map(), user_ip: new Map() }
  // An account from one address is held to the account's threshold: the owner elsewhere is not.
  const thresholds: Record<LockoutScope, number> = { user: opts.maxFailuresPerUser, ip: opts.maxFailuresPerIp, user_ip: opts.maxFailuresPerUser }
  const locked = new Set<Entry>()
  let timer: NodeJS.Timeout | undefined
  let timerAt = Infinity
  let closed = false

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

  return {
    lockedEntry,
    fail,
    failShared,
    mirror,
    forgive (scope, key) {
      const e = tables[scope].get(key)
      if (e !== undefined && e.lockedUntil <= now()) {
        if (e.endPending) ended(e)
        tables[scope].delete(e.key)
      }
    },
    counts: (scope) => thresholds[scope] > 0,
    sweep,
    close () {
      closed = true
      clearTimeout(timer)
      timer = undefined
    }
  }
}
