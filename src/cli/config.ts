import { loadConfig } from '../config/load.js'
import { redactedConfig } from '../config/schema.js'
import { expectPositionals, parse, stringFlag, UsageError } from './args.js'

export const CONFIG_HELP = `Usage: mqtt-bastion config check [--config FILE]

Validates the configuration (file, then env overrides) and prints the effective
configuration as JSON; exits non-zero with one line naming the bad key otherwise.
`

export async function configCommand (argv: string[], out: (s: string) => void): Promise<void> {
  const [sub, ...rest] = argv
  if (sub === undefined || sub === '--help' || sub === '-h') { out(CONFIG_HELP); return }
  if (sub !== 'check') throw new UsageError(`unknown config command: ${sub} (expected check)`)
  const { values, positionals } = parse(rest, { config: { type: 'string' } })
  if (values.help === true) { out(CONFIG_HELP); return }
  expectPositionals(positionals, [])
  const file = stringFlag(values, 'config')
  const { config, file: used } = loadConfig({ ...(file === undefined ? {} : { file }), env: process.env })
  out(`config ok (${used ?? 'built-in defaults'})\n${JSON.stringify(redactedConfig(config), null, 2)}\n`)
}
