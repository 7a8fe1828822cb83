/** One account as every store keeps it. The hash is bcrypt; the secret is base32 (RFC 4648). */
export interface UserRecord {
  readonly username: string
  readonly passwordHash: string
  /** Absent where the store has none (a Mosquitto password_file without a TOTP file). */
  readonly totpSecret?: string
  readonly enabled: boolean
  readonly createdAt: string
  /** The last TOTP step accepted for this user, where the store keeps it (replay protection). */
  readonly lastStep?: number
}

/** One client id and the user it belongs to (auth.clientIdBinding `owner`). */
export interface ClientIdOwner { readonly clientId: string; readonly user: string; readonly lastSeen: string }

/**
 * Client ids bound to the first user that logged in with them, so no other user can hold a
 * device's id while it is offline. Each user keeps at most a bounded number (the least recently
 * seen are released first), so random ids cannot grow the table without end.
 */
export interface ClientIdOwners {
  /** The id's owner after the call: `user` when the id was free (now bound to it) or theirs already. Atomic. */
  bind (clientId: string, user: string): Promise<string>
  /** Frees an id (the admin command); false when it was not bound. */
  release (clientId: string): Promise<boolean>
  /** Every binding, or one user's, most recently seen first. */
  list (user?: string): Promise<ClientIdOwner[]>
}

export type UserPatch = Partial<Pick<UserRecord, 'passwordHash' | 'totpSecret' | 'enabled'>>

/**
 * The seam between login and where accounts live (embedded file, MySQL, ...).
 * A store that cannot answer throws BastionError BASTION_ERR_BACKEND_UNAVAILABLE: that is a
 * fault, never a "no such user", and login turns it into "server unavailable".
 */
export interface UserStore {
  /** Set when the store cannot be changed from here (why, and what to use instead). */
  readonly readOnly?: string
  /**
   * A hash of the same kind and cost as the store's own, checked for unknown users so that
   * timing does not tell which accounts exist. Defaults to a bcrypt cost-12 hash.
   */
  readonly dummyHash?: string
  /** Re-reads the store's files (SIGHUP); on a bad file it throws and keeps what it had. */
  reload? (): Promise<void>
  find (username: string): Promise<UserRecord | undefined>
  /**
   * Records that a TOTP step was used by this user; true only if no step >= `step` was
   * claimed before (RFC 6238 §5.2: a code is accepted once). Must be atomic.
   */
  claimStep (username: string, step: number): Promise<boolean>
  add (record: UserRecord): Promise<void>
  /**
   * Adds every record or none (one transaction): bulk provisioning and moving users between
   * stores. A name already in the store fails the whole call with BASTION_ERR_USER_EXISTS.
   */
  addMany (records: readonly UserRecord[]): Promise<void>
  update (username: string, patch: UserPatch): Promise<void>
  remove (username: string): Promise<void>
  list (): Promise<UserRecord[]>
  /** Where the store itself keeps client id owners (shared with the CLI); otherwise the broker keeps them in memory. */
  readonly clientIds?: ClientIdOwners
  /** Checks that the backend answers; throws what find() would throw when it cannot. */
  ping (): Promise<void>
  close (): Promise<void>
}
