// The typed field readers every config section is validated with: each failure names its key.
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { resolve } from 'node:path'
import { BastionError } from '../errors.js'

export type Raw = Record<string, unknown>

export function fail (key: string, message: string): never {
  throw new BastionError('BASTION_ERR_CONFIG', `config ${key}: ${message}`)
}

export function object (value: unknown, key: string, allowed: readonly string[]): Raw {
  if (value === undefined || value === null) return {}
  if (typeof value !== 'object' || Array.isArray(value)) fail(key, 'must be a mapping')
  for (const k of Object.keys(value)) {
    if (!allowed.includes(k)) fail(key === '' ? k : `${key}.${k}`, `unknown key (allowed: ${allowed.join(', ')})`)
  }
  return value as Raw
}

export function str (raw: Raw, key: string, path: string, def?: string): string {
  const v = raw[key] ?? def
  if (typeof v !== 'string' || v.length === 0) fail(path, 'must be a non-empty string')
  return v
}

export function bool (raw: Raw, key: string, path: string, def: boolean): boolean {
  const v = raw[key] ?? def
  if (typeof v !== 'boolean') fail(path, 'must be true or false')
  return v
}

export function int (raw: Raw, key: string, path: string, def: number, min: number, max: number): number {
  const v = raw[key] ?? def
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(path, `must be an integer from ${min} to ${max}`)
  }
  return v
}

export function oneOf<T extends string> (raw: Raw, key: string, path: string, def: T, allowed: readonly T[]): T {
  const v = raw[key] ?? def
  if (typeof v !== 'string' || !allowed.includes(v as T)) fail(path, `must be one of ${allowed.join(', ')}`)
  return v as T
}

export function host (raw: Raw, path: string, def: string): string {
  const h = str(raw, 'host', path, def)
  if (isIP(h) === 0 && !/^[A-Za-z0-9.-]{1,253}$/.test(h)) fail(path, `"${h}" is not an IP address or host name`)
  return h
}


/** A file a key names, resolved against the config's folder and read now: its path and text. */
export function readNamedFile (raw: Raw, key: string, path: string, base: string): { file: string; text: string } {
  const file = resolve(base, str(raw, key, path))
  try {
    return { file, text: readFileSync(file, 'utf8') }
  } catch (err) {
    fail(path, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
}

/**
 * A secret given as `password`, `passwordFile` (read now, without its last line break) or
 * `passwordEnv` (the name of an environment variable), at most one of them; undefined: none.
 */
export function secret (raw: Raw, path: string, base: string, env: NodeJS.ProcessEnv): string | undefined {
  const sources = ['password', 'passwordFile', 'passwordEnv'].filter((k) => raw[k] !== undefined)
  if (sources.length > 1) fail(path, `give one of password, passwordFile, passwordEnv (got ${sources.join(', ')})`)
  if (raw.password !== undefined) return str(raw, 'password', `${path}.password`)
  if (raw.passwordFile !== undefined) return readNamedFile(raw, 'passwordFile', `${path}.passwordFile`, base).text.replace(/\r?\n$/, '')
  if (raw.passwordEnv === undefined) return undefined
  const name = str(raw, 'passwordEnv', `${path}.passwordEnv`)
  const value = env[name]
  if (value === undefined) fail(`${path}.passwordEnv`, `environment variable ${name} is not set`)
  return value
}
