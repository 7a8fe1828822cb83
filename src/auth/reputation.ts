import type { Authenticator, LoginRequest } from './authenticator.js'
import { accountPart } from './login.js'
import { ipKey } from './lockout.js'

export interface ReputationOptions {
  /** The MQTT username carries `|code` after the account. */
  splitCode: boolean
  /** How long a success keeps an account and address known, ms; default 7 days. */
  rememberMs?: number
  /** Pairs remembered; the least recently seen is forgotten first. Default 100 000. */
  maxEntries?: number
  now?: () => number
}

export interface Reputation {
  /** Records each login's outcome for its account and address. */
  wrap (a: Authenticator): Authenticator
  /** This account logged in from this address recently and has not failed from it since. */
  known (req: LoginRequest): boolean
  readonly size: number
}

const WEEK_MS = 7 * 86_400_000

/**
 * Which devices the broker knows: an account that logged in from an address (IPv6 per /64) and
 * has not failed from there since. The login queue serves them first, so a flood of logins from
 * strangers cannot starve the fleet. Memory is bounded; a restart forgets everyone (they are
 * served in arrival order until they log in once more).
 */
export function createReputation (opts: ReputationOptions): Reputation {
  const rememberMs = opts.rememberMs ?? WEEK_MS
  const maxEntries = opts.maxEntries ?? 100_000
  const now = opts.now ?? Date.now
  const seen = new Map<string, number>()

  function key (req: LoginRequest): string | undefined {
    if (req.username === undefined || req.username === '') return undefined
    const account = opts.splitCode ? accountPart(req.username) : req.username
    // Bounded keys only: the account part of a login that may be anything.
    if (account.length > 64) return undefined
    return `${account.toLowerCase()}\u0000${ipKey(req.remoteAddress)}`
  }

  return {
    wrap (a) {
      return {
        name: a.name,
        async login (req) {
          const result = await a.login(req)
          const k = key(req)
          if (k === undefined) return result
          seen.delete(k)
          if (result.ok) {
            seen.set(k, now())
            if (seen.size > maxEntries) seen.delete(seen.keys().next().value as string)
          }
          return result
        },
        async close () {
          await a.close?.()
        }
      }
    },
    known (req) {
      const k = key(req)
      const at = k === undefined ? undefined : seen.get(k)
      return at !== undefined && now() - at < rememberMs
    },
    get size () { return seen.size }
  }
}
