import { loadConfig } from '../config/load.js'
import { checkTable, migrateTable } from '../stores/mysql-schema.js'
import { BastionError } from '../errors.js'
import { expectPositionals, parse, stringFlag, UsageError } from './args.js'

export const DB_HELP = `Usage:
  mqtt-bastion db check [--config FILE]
  mqtt-bastion db migrate [--config FILE]

For auth.store.type: mysql (MySQL or MariaDB).

db check     Connects with the configured credentials and compares the users table with
             what the broker reads: required columns (username, password, totp_secret,
             or the names set in auth.store.columns) and the optional ones. Exits 1 when
             it cannot connect or a required column is missing.
db migrate   Creates the table when it is missing, otherwise adds the optional columns
             enabled, last_step and created_at. Never drops, renames or rewrites
             anything; running it again changes nothing.
`

export async function dbCommand (argv: string[], out: (s: string) => void): Promise<void> {
  const [sub, ...rest] = argv
  if (sub === undefined || sub === '--help' || sub === '-h') { out(DB_HELP); return }
  if (sub !== 'check' && sub !== 'migrate') throw new UsageError(`unknown db command: ${sub} (expected check or migrate)`)
  const { values, positionals } = parse(rest, { config: { type: 'string' } })
  if (values.help === true) { out(DB_HELP); return }
  expectPositionals(positionals, [])
  const file = stringFlag(values, 'config')
  const { config } = loadConfig({ ...(file === undefined ? {} : { file }), env: process.env })
  const store = config.auth.store
  if (store.type !== 'mysql') {
    throw new BastionError('BASTION_ERR_CONFIG', `db ${sub} needs auth.store.type: mysql (this config uses ${store.type})`)
  }
  const where = `${store.host}:${store.port}/${store.database}.${store.table}`
  if (sub === 'migrate') {
    const ran = await migrateTable(store)
    out(ran.length === 0 ? `${where}: up to date, nothing to do\n` : ran.map((s) => `${where}: ${s}\n`).join(''))
    return
  }
  const r = await checkTable(store)
  if (!r.tableExists) throw new BastionError('BASTION_ERR_USER_STORE', `${where}: table does not exist (mqtt-bastion db migrate creates it)`)
  if (r.missingRequired.length > 0) {
    throw new BastionError('BASTION_ERR_USER_STORE', `${where}: missing required column(s) ${r.missingRequired.join(', ')} (set auth.store.columns to the table's names)`)
  }
  out(`${where}: ok\n` + (r.missingOptional.length === 0
    ? 'all optional columns present\n'
    : `missing optional column(s): ${r.missingOptional.join(', ')} (mqtt-bastion db migrate adds them; until then: no enable/disable, replay protection per process only)\n`))
}
