// Public API for embedding mqtt-bastion in another Node program.
export { createBastion, type Bastion, type BastionOptions } from './bastion.js'
export { loadConfig, type LoadOptions, type LoadedConfig } from './config/load.js'
export { parseConfig, type BastionConfig, type ListenerConfig, type TlsListenerConfig, type TcpListenerConfig, type StoreConfig } from './config/schema.js'
export type { AuthHardening, ClientIdBinding, LimitsConfig, LockoutConfig, LoginQueueConfig, ShutdownConfig } from './config/hardening.js'
export { BastionError, ErrorCodes, type ErrorCode } from './errors.js'
export { createLogger, type Logger } from './log.js'
/** The aedes release the broker runs and the patches it carries (patches/README.md). */
export { ENGINE, type EnginePatches } from './engine/aedes.js'
export type { AclPolicy } from './acl/policy.js'
export type { UserStore, UserRecord, UserPatch } from './stores/store.js'
export type { Identity, Action, Decision, LoginFailure } from './types.js'
