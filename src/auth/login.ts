import { BastionError } from '../errors.js'
import type { PasswordPool } from '../crypto/password-pool.js'
import { verifyCode } from '../crypto/totp.js'
import type { UserStore } from '../stores/store.js'
import { USERNAME_PATTERN, type LoginFailure } from '../types.js'

export interface LoginDeps {
  store: UserStore
  passwords: PasswordPool
  totp: { window: number; replayProtection: boolean }
  now?: () => number
}

export type LoginResult =
  | { ok: true; user: string; delta: number }
  /** `user` is the claimed name when it was well-formed (for the log); never the code. */
  | { ok: false; reason: LoginFailure; user?: string }

// bcrypt (cost 12) of random bytes nobody kept: an unknown user costs the same work as a known
// one, so response timing does not tell which accounts exist.
const DUMMY_HASH = '$2b$12$Ls3.DSKN8Y7j1lenObBnkemha5r00nSmKYu6zHZ0hVaZCyCPSlb6i'

/** Splits `user|code`; the code is everything after the last `|` so it cannot smuggle one. */
export function parseUsername (raw: string): { user: string; code: string } | undefined {
  const i = raw.lastIndexOf('|')
  if (i < 0) return undefined
  return { user: raw.slice(0, i), code: raw.slice(i + 1) }
}

/**
 * The two-factor login: `<user>|<TOTP code>` as MQTT username, the base password as MQTT
 * password. Order matters: the password is checked before the code so a guessed password
 * never burns (or reveals) a valid code, and the step is claimed last, atomically.
 * A store fault propagates as BASTION_ERR_BACKEND_UNAVAILABLE; it is never a refusal reason
 * that could be mistaken for "no such user".
 */
export async function login (deps: LoginDeps, username: string | undefined, password: Buffer | undefined): Promise<LoginResult> {
  if (username === undefined || username === '') return { ok: false, reason: 'anonymous' }
  const parts = parseUsername(username)
  if (parts === undefined || parts.user === '' || parts.code === '') return { ok: false, reason: 'malformed_username' }
  const { user, code } = parts
  if (!USERNAME_PATTERN.test(user)) return { ok: false, reason: 'invalid_username' }
  if (!/^\d{6}$/.test(code)) return { ok: false, reason: 'malformed_username', user }
  if (password === undefined || password.length === 0) return { ok: false, reason: 'missing_password', user }

  const record = await deps.store.find(user)
  const passwordOk = await deps.passwords.verify(password.toString('utf8'), record?.passwordHash ?? DUMMY_HASH)
  if (record === undefined) return { ok: false, reason: 'unknown_user', user }
  if (!passwordOk) return { ok: false, reason: 'bad_password', user }
  if (!record.enabled) return { ok: false, reason: 'disabled_user', user }

  const match = verifyCode(record.totpSecret, code, deps.totp.window, (deps.now ?? Date.now)())
  if (match === undefined) return { ok: false, reason: 'bad_otp', user }
  if (deps.totp.replayProtection && !(await deps.store.claimStep(user, match.step))) {
    return { ok: false, reason: 'replayed_otp', user }
  }
  return { ok: true, user, delta: match.delta }
}

export function isBackendFault (err: unknown): boolean {
  return err instanceof BastionError && (err.code === 'BASTION_ERR_BACKEND_UNAVAILABLE' || err.code === 'BASTION_ERR_USER_STORE')
}
