import { isIPv6 } from 'node:net'
import type { LockoutConfig } from '../config/hardening.js'
import type { Logger } from '../log.js'
import { USERNAME_PATTERN, type LoginFailure } from '../types.js'
import type { Authenticator, LoginRequest, LoginResult, Screening } from './authenticator.js'
import { accountPart } from './login.js'

/**
 * `user`: an account, from every address; `ip`: an address, for every account; `user_ip`: an
 * account from one address (what a failure that proves nothing about the account counts as).
 */
export type LockoutScope = 'user' | 'ip' | 'user_ip'

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

/**
 * Which refusals are a wrong guess. A Record, so a new LoginFailure cannot be added without
 * deciding here; faults (thrown, never a result) and refusals that are not about credentials
 * never count, so a store outage or a busy queue cannot lock anyone out.
 */
const COUNTS: Record<LoginFailure, boolean> = {
  anonymous: true,
  malformed_username: true,
  invalid_username: true,
  missing_password: true,
  unknown_user: true,
  disabled_user: true,
  bad_password: true,
  bad_otp: true,
  replayed_otp: true,
  backend_denied: true,
  totp_not_configured: true,
  no_certificate: true,
  certificate_mismatch: true,
  will_denied: false,
  backend_unavailable: false,
  clientid_rejected: false,
  locked_out: false,
  server_busy: false,
  clientid_taken: false,
  clientid_binding: false,
  clientid_owned: false,
  keepalive_rejected: false
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

function describe (scope: LockoutScope, user: string | undefined, remote: string): string {
  if (scope === 'user') return `account ${user ?? ''}`
  if (scope === 'ip') return `address ${remote}`
  return `account ${user ?? ''} from address ${remote}`
}

/**
 * IPv6 addresses are counted per /64: one host usually holds a whole /64 and could otherwise
 * pick a fresh address for every guess. IPv4-mapped addresses count as their IPv4 address.
 */
export function ipKey (address: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address)
  if (mapped !== null) return mapped[1] as string
  const bare = address.split('%')[0] as string
  if (!isIPv6(bare)) return address
  const [head = '', tail] = bare.split('::')
  const h = head === '' ? [] : head.split(':')
  const t = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? h : [...h, ...Array<string>(Math.max(0, 8 - h.length - t.length)).fill('0'), ...t]
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`
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

  function start (e: Entry, user: string | undefined, remote: string): void {
    const t = now()
    const maxMs = opts.maxDuration * 1000
    // A key quiet for maxDuration since its last lockout starts the doubling again.
    if (e.lockedUntil > 0 && t - e.lockedUntil >= maxMs) e.strikes = 0
    e.strikes = Math.min(e.strikes + 1, 32)
    const seconds = Math.min(opts.duration * 2 ** (e.strikes - 1), opts.maxDuration)
    e.lockedUntil = t + seconds * 1000
    const failures = e.failures.length
    // The failures that caused this lockout are spent: after it, the next one needs a fresh threshold.
    e.failures = []
    e.endPending = true
    e.user = user
    e.remote = remote
    locked.add(e)
    log.warn({ event: 'auth.lockout', scope: e.scope, user, remote, failures, seconds, until: new Date(e.lockedUntil).toISOString() },
      `login lockout of ${describe(e.scope, user, remote)} for ${seconds} s after ${failures} failed logins`)
    opts.onLockout?.(e.scope)
    schedule(e.lockedUntil)
  }

  function fail (scope: LockoutScope, key: string | undefined, user: string | undefined, remote: string): void {
    const threshold = thresholds[scope]
    if (key === undefined || threshold === 0) return
    const table = tables[scope]
    const t = now()
    let e = table.get(key)
    if (e !== undefined) {
      // A lockout that began while this attempt was being checked already counts it.
      if (e.lockedUntil > t) return
      table.delete(key) // re-inserted below: the map's order is least recently failed first
    } else {
      e = { scope, key, failures: [], strikes: 0, lockedUntil: 0, endPending: false, remote }
    }
    table.set(key, e)
    const from = t - opts.window * 1000
    e.failures = e.failures.filter((at) => at > from)
    e.failures.push(t)
    if (e.failures.length >= threshold) start(e, user, remote)
    if (table.size > maxKeys) {
      const [oldestKey, oldest] = table.entries().next().value as [string, Entry]
      table.delete(oldestKey)
      if (oldest.endPending) ended(oldest, true)
    }
  }

  const pairKey = (account: { key: string } | undefined, remote: string): string | undefined =>
    account === undefined ? undefined : `${account.key}\u0000${ipKey(remote)}`

  function refusal (req: LoginRequest): LoginResult | undefined {
    const account = accountOf(req.username)
    if (lockedEntry('user', account?.key) === undefined && lockedEntry('ip', ipKey(req.remoteAddress)) === undefined &&
      lockedEntry('user_ip', pairKey(account, req.remoteAddress)) === undefined) return undefined
    // The same answer for real and unknown accounts: only the name the client sent.
    return account === undefined ? { ok: false, reason: 'locked_out' } : { ok: false, reason: 'locked_out', user: account.name }
  }

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
          const refused = refusal(req)
          if (refused !== undefined) return refused
          const result = await a.login(req)
          const account = accountOf(req.username)
          if (result.ok) {
            // The account's owner proved the password: its earlier failures were typos.
            for (const [scope, key] of [['user', account?.key], ['user_ip', pairKey(account, req.remoteAddress)]] as const) {
              const e = key === undefined ? undefined : tables[scope].get(key)
              if (e !== undefined && e.lockedUntil <= now()) {
                if (e.endPending) ended(e)
                tables[scope].delete(e.key)
              }
            }
          } else if (COUNTS[result.reason]) {
            // With the code checked first, only a wrong password behind a valid code shows the
            // TOTP secret is known: that alone may lock the account for everyone, the owner too.
            // Anything else is a guess anyone can make, and must not be a lockout button.
            if (opts.codeFirst !== true || result.reason === 'bad_password') fail('user', account?.key, account?.name, req.remoteAddress)
            else fail('user_ip', pairKey(account, req.remoteAddress), account?.name, req.remoteAddress)
            fail('ip', ipKey(req.remoteAddress), undefined, req.remoteAddress)
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
          return refusal(req) ?? await a.login(req)
        },
        // The re-check runs where the slow part starts: after the queue's wait, before bcrypt.
        ...(screen === undefined
          ? {}
          : {
              async screen (req: LoginRequest): Promise<Screening> {
                const s = await screen(req)
                if ('result' in s) return s
                return { ...s, verify: async () => refusal(req) ?? await s.verify() }
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
