/** Who a connected client is, fixed at login and never changed for the life of the connection. */
export interface Identity {
  readonly user: string
  readonly clientId: string
  readonly remoteAddress: string
  /** CN of a verified client certificate, when the listener asked for one. */
  readonly certCN?: string
  /** Whether the client sent its own will; the server will is only for clients without one. */
  readonly hasWill: boolean
  /**
   * The MQTT username exactly as sent (e.g. `alice|123456`), for backends that expect it
   * verbatim (the go-auth HTTP contract). Never logged: it may carry a code.
   */
  readonly mqttUsername?: string
}

/** `read` is the delivery (forward) check: may this client receive a message on this topic. */
export type Action = 'publish' | 'subscribe' | 'read'

/** Allow and deny are normal answers; a backend that cannot answer throws instead. */
export type Decision = { readonly allow: true } | { readonly allow: false; readonly reason: string }

export const ALLOW: Decision = Object.freeze({ allow: true })
export function deny (reason: string): Decision {
  return { allow: false, reason }
}

/** Why a login was refused; logged as a category, never with the secret that failed. */
export type LoginFailure =
  | 'anonymous'
  | 'malformed_username'
  | 'invalid_username'
  | 'missing_password'
  | 'unknown_user'
  | 'disabled_user'
  | 'bad_password'
  | 'bad_otp'
  | 'replayed_otp'
  | 'will_denied'
  | 'backend_unavailable'
  | 'backend_denied'
  | 'clientid_rejected'
  | 'no_certificate'
  | 'certificate_mismatch'
  | 'totp_not_configured'
  /** Refused without checking credentials: the account or the address is locked out. */
  | 'locked_out'
  /** The login queue was full (CONNACK 0x89 / 3.1.1 code 3). */
  | 'server_busy'
  /** The client id is in use by a session of another user. */
  | 'clientid_taken'
  /** The client id does not name its user (auth.clientIdBinding exact or prefix). */
  | 'clientid_binding'
  /** The client id belongs to another user (auth.clientIdBinding owner). */
  | 'clientid_owned'
  /** A 3.1.1 keepalive of 0 or above limits.maxKeepAlive. */
  | 'keepalive_rejected'

/** Letters, digits, `_ . -`: nothing that can leave a topic level (`/ + # $`, NUL). */
export const USERNAME_PATTERN = /^[A-Za-z0-9_.-]{1,64}$/
