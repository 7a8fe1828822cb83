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
 * The seam between a CONNECT and whoever decides logins: our own stores (bcrypt + TOTP) or a
 * remote service (the go-auth HTTP contract). A backend that cannot answer rejects with
 * BASTION_ERR_BACKEND_UNAVAILABLE; the hooks turn that into "server unavailable", never allow.
 */
export interface Authenticator {
  readonly name: string
  login (req: LoginRequest): Promise<LoginResult>
  close? (): Promise<void>
}
