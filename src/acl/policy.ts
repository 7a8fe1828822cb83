import type { Action, Decision, Identity } from '../types.js'

/**
 * Decides what an authenticated client may touch. Policies answer allow or deny; they never
 * see credentials and never import a store. `read` is asked for every delivered message, so it
 * must answer synchronously (aedes' forward hook is synchronous).
 */
export interface AclPolicy {
  readonly name: string
  decide (identity: Identity, action: Action, topic: string): Decision
}
