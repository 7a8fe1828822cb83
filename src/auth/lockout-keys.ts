// What the lockout counts and under which key: pure pieces shared by the local tables
// (auth/lockout.ts) and the cluster's (cluster/lockout.ts).
import { isIPv6 } from 'node:net'
import type { LoginFailure } from '../types.js'

/**
 * `user`: an account, from every address; `ip`: an address, for every account; `user_ip`: an
 * account from one address (what a failure that proves nothing about the account counts as).
 */
export type LockoutScope = 'user' | 'ip' | 'user_ip'

/**
 * Which refusals are a wrong guess. A Record, so a new LoginFailure cannot be added without
 * deciding here; faults (thrown, never a result) and refusals that are not about credentials
 * never count, so a store outage or a busy queue cannot lock anyone out.
 */
export const COUNTS: Record<LoginFailure, boolean> = {
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

export function describe (scope: LockoutScope, user: string | undefined, remote: string): string {
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

/** A lockout that started: how many failures made it, and how long it lasts. */
export interface Started { readonly failures: number; readonly ms: number }

/**
 * Failure counts and lockouts kept where every node of a cluster sees them
 * (cluster/lockout.ts). Keys are the local tables' keys: a well-formed account name (lower
 * case), an ipKey, or both joined by NUL.
 */
export interface SharedLockout {
  /** For each key, the milliseconds its lockout has left (0: none). Throws a fault when it cannot tell. */
  remaining (keys: ReadonlyArray<readonly [LockoutScope, string]>): Promise<number[]>
  /** Counts one failure; the lockout it started, if any. Throws a fault when it cannot count. */
  fail (scope: LockoutScope, key: string, threshold: number): Promise<Started | undefined>
  /** The account's owner logged in: its failures and strikes are forgotten unless it is locked. Never throws. */
  clear (scope: LockoutScope, key: string): void
  /** Lockouts other nodes started (key, milliseconds left): what the pre-TLS check mirrors. */
  onRemote (listener: (scope: LockoutScope, key: string, ms: number) => void): void
}
