// The layers a login passes through, outermost first: known devices first in the queue
// (reputation), lockout, the bounded login queue, the lockout again once a slot is free, then the
// check itself (the user store with bcrypt off the event loop, or an HTTP backend).
import type { BastionConfig } from '../config/schema.js'
import type { PasswordPool } from '../crypto/password-pool.js'
import type { Logger } from '../log.js'
import { timedStore } from '../monitoring/instrument.js'
import type { BrokerMetrics } from '../monitoring/metrics.js'
import type { UserStore } from '../stores/store.js'
import type { Authenticator } from './authenticator.js'
import { createCredentialCache, type CredentialCache } from './credential-cache.js'
import { createHttpAuthenticator, type GoAuthClient } from './http-backend.js'
import { createLockout, type Lockout, type LockoutScope, type SharedLockout } from './lockout.js'
import { createLoginQueue } from './login-queue.js'
import { createStoreAuthenticator } from './login.js'
import { createReputation } from './reputation.js'

export interface LoginChainDeps {
  readonly passwords: PasswordPool
  readonly log: Logger
  /** The local user store; absent with an HTTP backend. */
  readonly store?: UserStore
  readonly backend?: GoAuthClient
  readonly metrics?: BrokerMetrics
  /** In a cluster: lockout counters every node shares. */
  readonly shared?: SharedLockout
}

export interface LoginChain {
  /** Closing it closes every layer. */
  readonly authenticator: Authenticator
  /** Also asked before TLS (addressLocked) by the listeners' admission. */
  readonly lockout: Lockout
  /** Forgets a user's cached credentials when its sessions are revoked. */
  readonly credentials: CredentialCache
}

export function createLoginChain (config: BastionConfig, deps: LoginChainDeps): LoginChain {
  const { log, metrics } = deps
  const s = config.auth.store
  const splitCode = s.type === 'http' || config.auth.totp.required
  const lockout = createLockout({
    ...config.auth.lockout,
    splitCode,
    // The store login checks the code first; an HTTP backend answers for both factors at once.
    codeFirst: s.type !== 'http' && config.auth.totp.required,
    log: log.child({ module: 'auth' }),
    ...(metrics === undefined ? {} : { onLockout: (scope: LockoutScope) => metrics.onEvent({ type: 'lockout', scope }) }),
    ...(deps.shared === undefined ? {} : { shared: deps.shared })
  })
  const credentials = createCredentialCache(config.auth.credentialCache)
  // Devices that logged in before from where they are now are served first by the queue.
  const reputation = createReputation({ splitCode })
  const queue = createLoginQueue({ ...config.auth.loginQueue, workers: config.auth.workers, priority: (req) => reputation.known(req) })
  const store = deps.store as UserStore
  const check = s.type === 'http'
    ? createHttpAuthenticator(s, log.child({ module: 'auth' }), deps.backend)
    : createStoreAuthenticator({
      store: metrics === undefined ? store : timedStore(store, s.type, metrics),
      passwords: deps.passwords,
      totp: config.auth.totp,
      cache: credentials,
      ...(metrics === undefined ? {} : { onPasswordCheck: (cached: boolean) => metrics.onEvent({ type: 'password_check', cached }) })
    })
  // A locked-out attempt is refused before it queues (no slot, no bcrypt) and once more when it
  // gets a slot, so guesses that waited see the failures recorded meanwhile.
  const authenticator = reputation.wrap(lockout.wrap(queue.wrap(lockout.recheck(check))))
  return { authenticator, lockout, credentials }
}
