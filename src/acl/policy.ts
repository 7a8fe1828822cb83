import type { Action, Decision, Identity } from '../types.js'

/**
 * Decides what an authenticated client may touch. Policies answer allow or deny; they never
 * see credentials and never import a store.
 *
 * `publish` and `subscribe` may answer asynchronously (a remote backend). `read` is asked for
 * every delivered message inside aedes' synchronous forward hook, so it must answer
 * synchronously; a Promise returned for `read` counts as a deny.
 * A policy that cannot answer throws or rejects with BASTION_ERR_BACKEND_UNAVAILABLE: that is
 * a fault, and the hooks deny (never allow) and log it.
 */
export interface AclPolicy {
  readonly name: string
  decide (identity: Identity, action: Action, topic: string): Decision | Promise<Decision>
  /** Re-reads the policy's files (SIGHUP); on a bad file it throws and the old rules stay. */
  reload? (): Promise<void>
  close? (): Promise<void>
}
