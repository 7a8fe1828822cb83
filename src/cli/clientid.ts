import { loadConfig } from '../config/load.js'
import { BastionError } from '../errors.js'
import { createStore } from '../stores/create.js'
import type { ClientIdOwners } from '../stores/store.js'
import { expectPositionals, parse, stringFlag, UsageError } from './args.js'
import { cliStoreLogger } from './store-log.js'

export const CLIENTID_HELP = `Usage:
  mqtt-bastion clientid list [USER] [--json] [--config FILE]
  mqtt-bastion clientid release CLIENT_ID [--config FILE]

With auth.clientIdBinding: owner (the default), a client id belongs to the first user that
logged in with it: another user's CONNECT with it gets CONNACK 0x85 (3.1.1: code 2). Each
user keeps its 32 most recently used ids; older ones are released on their own.

  list      The bound ids (of USER), most recently used first.
  release   Frees CLIENT_ID for the next user that logs in with it (a device that changed
            hands). A running broker sees the change at that device's next login.

Bindings live in the SQLite user store; in a cluster (the config has cluster:), in its Redis
for every store, shared by all nodes. Without a cluster, with other stores (mysql, file, mosquitto-passwd,
http) the broker keeps them in memory: this command cannot reach them, and a restart
releases them all.
  --config FILE Config file (default: env BASTION_CONFIG, else built-in defaults).
`

/** Client ids are the client's choice: one with spaces or control characters is printed quoted and escaped. */
function printable (id: string): string {
  if (/^[\x21-\x7e]+$/.test(id)) return id
  return '"' + id.replace(/[^\x20-\x7e]|["\\]/g, (c) => c === '"' || c === '\\' ? `\\${c}` : `\\u{${(c.codePointAt(0) as number).toString(16)}}`) + '"'
}

export async function clientIdCommand (argv: string[], out: (s: string) => void): Promise<void> {
  const [sub, ...rest] = argv
  if (sub === undefined || sub === '--help' || sub === '-h') { out(CLIENTID_HELP); return }
  if (sub !== 'list' && sub !== 'release') throw new UsageError(`unknown clientid command: ${sub} (see mqtt-bastion clientid --help)`)
  const { values, positionals } = parse(rest, { config: { type: 'string' }, json: { type: 'boolean' } })
  if (values.help === true) { out(CLIENTID_HELP); return }
  if (sub === 'release' && values.json !== undefined) throw new UsageError('clientid release does not take --json')
  const configFile = stringFlag(values, 'config')
  const { config } = loadConfig({ ...(configFile === undefined ? {} : { file: configFile }), env: process.env })
  // In a cluster the owners live in Redis, whatever the user store (docs/cluster.md).
  if (config.cluster !== undefined) {
    const { openClusterAdmin } = await import('../cluster/admin.js')
    const admin = await openClusterAdmin(config.cluster, cliStoreLogger())
    try {
      await ownersCommand(sub, admin.owners, positionals, values.json === true, out)
    } finally {
      await admin.close()
    }
    return
  }
  if (config.auth.store.type === 'http') throw new BastionError('BASTION_ERR_INVALID_INPUT', 'auth.store is http: client id owners are kept in the broker\'s memory, not in a store this command can reach')
  const store = createStore(config, cliStoreLogger())
  try {
    const owners = store.clientIds
    if (owners === undefined) {
      throw new BastionError('BASTION_ERR_INVALID_INPUT', `the ${config.auth.store.type} store does not keep client id owners: the broker keeps them in memory (a restart releases them)`)
    }
    await ownersCommand(sub, owners, positionals, values.json === true, out)
  } finally {
    await store.close()
  }
}

async function ownersCommand (sub: 'list' | 'release', owners: ClientIdOwners, positionals: string[], json: boolean, out: (s: string) => void): Promise<void> {
  if (sub === 'list') {
    const user = positionals.length === 0 ? undefined : expectPositionals(positionals, ['USER'])[0]
    const all = await owners.list(user)
    if (json) out(JSON.stringify(all) + '\n')
    else out(all.length === 0 ? 'no client ids bound\n' : all.map((o) => `${printable(o.clientId)}\t${o.user}\t${o.lastSeen}\n`).join(''))
    return
  }
  const [id] = expectPositionals(positionals, ['CLIENT_ID']) as [string]
  if (!(await owners.release(id))) throw new BastionError('BASTION_ERR_INVALID_INPUT', `client id ${JSON.stringify(id)} is not bound to any user`)
  out(`released client id ${id}\n`)
}
