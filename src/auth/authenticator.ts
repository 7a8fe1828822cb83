import type { LoginFailure } from '../types.js'

/** What a CONNECT offers for a login. */
export interface LoginRequest {
  /** The MQTT username as sent (`user|code` for two-factor logins). */
  readonly username?: string
  readonly password?: Buffer
  readonly clientId: string
  readonly remoteAddress: string
}

export type LoginResult =
  /**
   * `delta`: TOTP clock drift in steps, where a code was checked. `fingerprint`: an opaque
   * digest of the credentials the login was checked against, where a store keeps them, so a live
   * session can be ended when they change (never logged).
   */
  | { ok: true; user: string; delta?: number; fingerprint?: string }
  /** `user` is the claimed name when it was well-formed (for the log); never the code. */
  | { ok: false; reason: LoginFailure; user?: string }

/**
 * What the cheap first phase of a login found: either the answer, or the slow rest (a password
 * hash check) to run once the login queue admits it. `deadline` (ms since the epoch) is when
 * the code the login showed stops being valid: a login is not kept waiting past it.
 */
export type Screening =
  | { readonly result: LoginResult }
  | { readonly verify: () => Promise<LoginResult>; readonly deadline?: number }

/**
 * The seam between a CONNECT and whoever decides logins: our own stores (bcrypt + TOTP) or a
 * remote service (the go-auth HTTP contract). A backend that cannot answer rejects with
 * BASTION_ERR_BACKEND_UNAVAILABLE; the hooks turn that into "server unavailable", never allow.
 */
export interface Authenticator {
  readonly name: string
  login (req: LoginRequest): Promise<LoginResult>
  /**
   * A login in two phases, where the authenticator has a cheap one (parse, lookup, code check):
   * the login queue admits only what `screen` leaves to verify, so wrong codes never wait for
   * (or take) a password check slot. Without it the whole login is the slow part.
   */
  screen? (req: LoginRequest): Promise<Screening>
  close? (): Promise<void>
}
