import { createHash } from 'node:crypto'
import { BastionError } from '../errors.js'
import type { PasswordPool } from '../crypto/password-pool.js'
import { verifyCode } from '../crypto/totp.js'
import type { UserRecord, UserStore } from '../stores/store.js'
import { USERNAME_PATTERN } from '../types.js'
import type { Authenticator, LoginResult } from './authenticator.js'

export interface LoginDeps {
  store: UserStore
  passwords: PasswordPool
  /**
   * `required: false` (Mosquitto password files) makes the MQTT username the plain account
   * name and skips the code; the file and MySQL stores always require it.
   */
  totp: { window: number; replayProtection: boolean; required: boolean }
  now?: () => number
}

// bcrypt (cost 12) of random bytes nobody kept: an unknown user costs the same work as a known
// one, so response timing does not tell which accounts exist.
const DUMMY_HASH = '$2b$12$Ls3.DSKN8Y7j1lenObBnkemha5r00nSmKYu6zHZ0hVaZCyCPSlb6i'

/** The account part of an MQTT username: before the last `|` (a code follows it), or all of it. */
export function accountPart (username: string): string {
  const i = username.lastIndexOf('|')
  return i < 0 ? username : username.slice(0, i)
}

/** Splits `user|code`; the code is everything after the last `|` so it cannot smuggle one. */
export function parseUsername (raw: string): { user: string; code: string } | undefined {
  const i = raw.lastIndexOf('|')
  if (i < 0) return undefined
  return { user: raw.slice(0, i), code: raw.slice(i + 1) }
}

/**
 * What a live session was granted on: a digest, so the credentials themselves are not kept
 * beside each connection. `lastStep` is left out: every login moves it.
 */
export function credentialFingerprint (record: UserRecord): string {
  return createHash('sha256').update(`${record.passwordHash}\0${record.totpSecret ?? ''}\0${record.enabled ? 1 : 0}`).digest('base64url')
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
  let user = username
  let code: string | undefined
  if (deps.totp.required) {
    const parts = parseUsername(username)
    if (parts === undefined || parts.user === '' || parts.code === '') return { ok: false, reason: 'malformed_username' }
    ;({ user, code } = parts)
  }
  if (!USERNAME_PATTERN.test(user)) return { ok: false, reason: 'invalid_username' }
  if (code !== undefined && !/^\d{6}$/.test(code)) return { ok: false, reason: 'malformed_username', user }
  if (password === undefined || password.length === 0) return { ok: false, reason: 'missing_password', user }

  const record = await deps.store.find(user)
  const passwordOk = await deps.passwords.verify(password.toString('utf8'), record?.passwordHash ?? deps.store.dummyHash ?? DUMMY_HASH)
  if (record === undefined) return { ok: false, reason: 'unknown_user', user }
  if (!passwordOk) return { ok: false, reason: 'bad_password', user }
  if (!record.enabled) return { ok: false, reason: 'disabled_user', user }
  // The identity is the account as the store spells it: a MySQL column that ignores case finds
  // `alice` for `ALICE`, and the ACL branch, session owner and re-checks must all say `alice`.
  const account = record.username
  if (code === undefined) return { ok: true, user: account, fingerprint: credentialFingerprint(record) }
  // TOTP is required but this account has no secret (a password file without a TOTP file).
  if (record.totpSecret === undefined) return { ok: false, reason: 'totp_not_configured', user }

  const match = verifyCode(record.totpSecret, code, deps.totp.window, (deps.now ?? Date.now)())
  if (match === undefined) return { ok: false, reason: 'bad_otp', user }
  if (deps.totp.replayProtection && !(await deps.store.claimStep(account, match.step))) {
    return { ok: false, reason: 'replayed_otp', user }
  }
  return { ok: true, user: account, delta: match.delta, fingerprint: credentialFingerprint(record) }
}

export function isBackendFault (err: unknown): boolean {
  return err instanceof BastionError && (err.code === 'BASTION_ERR_BACKEND_UNAVAILABLE' || err.code === 'BASTION_ERR_USER_STORE')
}

/** The store-backed login (file, MySQL, Mosquitto password file) behind the Authenticator seam. */
export function createStoreAuthenticator (deps: LoginDeps): Authenticator {
  return {
    name: 'store',
    login: async (req) => await login(deps, req.username, req.password)
  }
}
