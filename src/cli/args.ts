import { parseArgs, type ParseArgsConfig } from 'node:util'
import { BastionError } from '../errors.js'

export type Options = NonNullable<ParseArgsConfig['options']>

/** A command's own flags plus --help; unknown flags are usage errors that name the flag. */
export function parse (argv: string[], options: Options): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  try {
    const r = parseArgs({ args: argv, options: { ...options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
    return { values: r.values as Record<string, string | boolean | undefined>, positionals: r.positionals }
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
}

export class UsageError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'UsageError'
  }
}

export function stringFlag (values: Record<string, unknown>, name: string): string | undefined {
  const v = values[name]
  return typeof v === 'string' ? v : undefined
}

export function intFlag (values: Record<string, unknown>, name: string, min: number, max: number): number | undefined {
  const v = stringFlag(values, name)
  if (v === undefined) return undefined
  const n = Number(v)
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new BastionError('BASTION_ERR_INVALID_INPUT', `--${name} must be an integer from ${min} to ${max}, got "${v}"`)
  }
  return n
}

/** Exactly `count` positionals, or a usage error saying what was expected. */
export function expectPositionals (positionals: string[], names: string[]): string[] {
  if (positionals.length !== names.length) {
    throw new UsageError(names.length === 0 ? `unexpected argument: ${positionals[0] ?? ''}` : `expected ${names.join(' ')}`)
  }
  return positionals
}
