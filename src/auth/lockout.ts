import type { LockoutConfig } from '../config/hardening.js'
import type { Logger } from '../log.js'
import { USERNAME_PATTERN, type LoginFailure } from '../types.js'
import type { Authenticator, LoginRequest, LoginResult, Screening } from './authenticator.js'
import { COUNTS, ipKey, type LockoutScope, type SharedLockout } from './lockout-keys.js'
import { createLockoutTable } from './lockout-table.js'
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

/**
 * Brute-force lockout: failed logins counted per account (any address) and per source address
 * (any account) over a sliding window. Unknown accounts are counted exactly like real ones, so
 * neither the lockout nor its answer tells whether an account exists.
 */
export function createLockout (opts: LockoutOptions): Lockout {
  const now = opts.now ?? Date.now
  const table = createLockoutTable({ ...opts, now, maxKeys: opts.maxKeys ?? MAX_KEYS })
  const { lockedEntry, fail, failShared, mirror } = table

  /** The account an attempt is for, compared without case: a MySQL column usually ignores it. */
  function accountOf (username: string | undefined): { key: string; name: string } | undefined {
    if (username === undefined) return undefined
    const name = opts.splitCode ? accountPart(username) : username
    // Anything else can never log in, and an unbounded name must not become a key.
    return USERNAME_PATTERN.test(name) ? { key: name.toLowerCase(), name } : undefined
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
    const keys = keysOf(req).filter((k): k is readonly [LockoutScope, string] => k[1] !== undefined && table.counts(k[0]))
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
              table.forgive(scope, key)
            }
          } else {
            await counted(req, result.reason)
          }
          return result
        },
        async close () {
          table.close()
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
    sweep: table.sweep,
    close: table.close
  }
}
