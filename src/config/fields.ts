// The typed field readers every config section is validated with: each failure names its key.
import { isIP } from 'node:net'
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

