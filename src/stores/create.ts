import type { BastionConfig } from '../config/schema.js'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'
import { createFileStore } from './file.js'
import { createMosquittoPasswdStore } from './mosquitto-passwd.js'
import { createMysqlStore } from './mysql.js'
import { createSqliteStore } from './sqlite.js'
import type { UserStore } from './store.js'

/**
 * Opens the user store the config names: the broker's composition root and the CLI's user
 * commands both call it. Kept apart from bastion.ts so a CLI command does not load the broker.
 */
export function createStore (config: BastionConfig, log: Logger): UserStore {
  const s = config.auth.store
  switch (s.type) {
    case 'mysql': return createMysqlStore(s, log.child({ module: 'store' }))
    case 'mosquitto-passwd': return createMosquittoPasswdStore({ path: s.path, ...(s.totpFile === undefined ? {} : { totpFile: s.totpFile }) })
    case 'sqlite': return createSqliteStore({ path: s.path, log: log.child({ module: 'store' }) })
    case 'file': return createFileStore(s.path)
    case 'http':
      throw new BastionError('BASTION_ERR_INVALID_INPUT', 'auth.store is http: users live in the HTTP backend, not here')
  }
}
