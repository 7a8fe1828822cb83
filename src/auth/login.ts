import { createHash } from 'node:crypto'
import { BastionError } from '../errors.js'
import type { PasswordPool } from '../crypto/password-pool.js'
import { newSecret, verifyCode, type TotpMatch } from '../crypto/totp.js'
import type { UserRecord, UserStore } from '../stores/store.js'
import { USERNAME_PATTERN, type LoginFailure } from '../types.js'
import type { Authenticator, LoginResult, Screening } from './authenticator.js'
import type { CredentialCache } from './credential-cache.js'

export interface LoginDeps {
  store: UserStore
  passwords: PasswordPool
  /**
   * `required: false` (Mosquitto password files) makes the MQTT username the plain account
   * name and skips the code; the file and MySQL stores always require it.
   */
  totp: { window: number; replayProtection: boolean; required: boolean }
  /** Passwords verified recently (auth.credentialCache); absent: every login runs bcrypt. */
  cache?: CredentialCache
  /** Told of each password check: by bcrypt (`cached: false`) or by the cache. Must not throw. */
  onPasswordCheck?: (cached: boolean) => void
  now?: () => number
}

// bcrypt (cost 12) of random bytes nobody kept: an unknown user costs the same work as a known
// one, so response timing does not tell which accounts exist.
const DUMMY_HASH = '$2b$12$Ls3.DSKN8Y7j1lenObBnkemha5r00nSmKYu6zHZ0hVaZCyCPSlb6i'
// A secret nobody holds, checked for unknown names (and accounts without one) so that a wrong
// code costs the same HMACs whether the account exists or not.
const DUMMY_SECRET = newSecret()
const PERIOD_MS = 30_000

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

const refuse = (reason: LoginFailure, user?: string): Screening => ({ result: user === undefined ? { ok: false, reason } : { ok: false, reason, user } })

/**
 * The cheap phase of the two-factor login (`<user>|<TOTP code>` as MQTT username, the base
 * password as MQTT password): parse, look the account up, check the code without claiming it.
 * Only a login that showed a valid, unclaimed code is left a password check (bcrypt, or the
 * credential cache), and its step is claimed last, atomically, once the password passed; so a
 * wrong code costs a few HMACs, never a bcrypt, and never burns the real device's code.
 * Unknown names are checked against a dummy secret: the same work and the same answer (0x86)
 * as a known account with a wrong code; only the log tells `unknown_user` from `bad_otp`.
 * A store fault propagates as BASTION_ERR_BACKEND_UNAVAILABLE, never a refusal reason.
 */
export async function screen (deps: LoginDeps, username: string | undefined, password: Buffer | undefined): Promise<Screening> {
  if (username === undefined || username === '') return refuse('anonymous')
  let user = username
  let code: string | undefined
  if (deps.totp.required) {
    const parts = parseUsername(username)
    if (parts === undefined || parts.user === '' || parts.code === '') return refuse('malformed_username')
    ;({ user, code } = parts)
  }
  if (!USERNAME_PATTERN.test(user)) return refuse('invalid_username')
  if (code !== undefined && !/^\d{6}$/.test(code)) return refuse('malformed_username', user)
  if (password === undefined || password.length === 0) return refuse('missing_password', user)

  const record = await deps.store.find(user)
  if (code === undefined) {
    // Password-only accounts (a Mosquitto password file): the password is the only factor.
    if (record === undefined) return { verify: async () => await dummyCheck(deps, password, user) }
    return passwordStep(deps, record, password, user, undefined)
  }
  const match = verifyCode(record?.totpSecret ?? DUMMY_SECRET, code, deps.totp.window, (deps.now ?? Date.now)())
  if (record === undefined) return refuse('unknown_user', user)
  // TOTP is required but this account has no secret (a password file without a TOTP file).
  if (record.totpSecret === undefined) return refuse('totp_not_configured', user)
  if (match === undefined) return refuse('bad_otp', user)
  // A code already claimed is refused before any password work; the claim below stays the
  // authority (two logins with one code can both get this far).
  if (deps.totp.replayProtection && record.lastStep !== undefined && match.step <= record.lastStep) return refuse('replayed_otp', user)
  return passwordStep(deps, record, password, user, match)
}

/** The password check of a login whose code (if any) is valid: the cache, else bcrypt later. */
function passwordStep (deps: LoginDeps, record: UserRecord, password: Buffer, user: string, match: TotpMatch | undefined): Screening {
  const finish = async (): Promise<LoginResult> => await afterPassword(deps, record, user, match)
  if (record.enabled && deps.cache?.hit(record, password) === true) {
    deps.onPasswordCheck?.(true)
    return { verify: finish }
  }
  return {
    // The code stops being accepted once the clock is more than `window` steps past its own.
    ...(match === undefined ? {} : { deadline: (match.step + deps.totp.window + 1) * PERIOD_MS }),
    verify: async () => {
      deps.onPasswordCheck?.(false)
      if (!(await deps.passwords.verify(password.toString('utf8'), record.passwordHash))) return { ok: false, reason: 'bad_password', user }
      if (record.enabled) deps.cache?.remember(record, password)
      return await finish()
    }
  }
}

async function afterPassword (deps: LoginDeps, record: UserRecord, user: string, match: TotpMatch | undefined): Promise<LoginResult> {
  if (!record.enabled) return { ok: false, reason: 'disabled_user', user }
  // The identity is the account as the store spells it: a MySQL column that ignores case finds
  // `alice` for `ALICE`, and the ACL branch, session owner and re-checks must all say `alice`.
  const account = record.username
  if (match === undefined) return { ok: true, user: account, fingerprint: credentialFingerprint(record) }
  if (deps.totp.replayProtection && !(await deps.store.claimStep(account, match.step))) {
    return { ok: false, reason: 'replayed_otp', user }
  }
  return { ok: true, user: account, delta: match.delta, fingerprint: credentialFingerprint(record) }
}

async function dummyCheck (deps: LoginDeps, password: Buffer, user: string): Promise<LoginResult> {
  deps.onPasswordCheck?.(false)
  await deps.passwords.verify(password.toString('utf8'), deps.store.dummyHash ?? DUMMY_HASH)
  return { ok: false, reason: 'unknown_user', user }
}

/** Both phases at once: the login without a queue between them. */
export async function login (deps: LoginDeps, username: string | undefined, password: Buffer | undefined): Promise<LoginResult> {
  const s = await screen(deps, username, password)
  return 'result' in s ? s.result : await s.verify()
}

export function isBackendFault (err: unknown): boolean {
  return err instanceof BastionError && (err.code === 'BASTION_ERR_BACKEND_UNAVAILABLE' || err.code === 'BASTION_ERR_USER_STORE')
}

/** The store-backed login (file, MySQL, Mosquitto password file) behind the Authenticator seam. */
export function createStoreAuthenticator (deps: LoginDeps): Authenticator {
  return {
    name: 'store',
    login: async (req) => await login(deps, req.username, req.password),
    screen: async (req) => await screen(deps, req.username, req.password)
  }
}
