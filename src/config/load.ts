import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { BastionError } from '../errors.js'
import { LOG_LEVELS, parseConfig, type BastionConfig } from './schema.js'

export interface LoadOptions {
  /** `--config FILE`; falls back to env BASTION_CONFIG; with neither, defaults are used. */
  file?: string
  env?: NodeJS.ProcessEnv
  cwd?: string
}

export interface LoadedConfig {
  config: BastionConfig
  /** Absolute path of the file read, or undefined when running on defaults. */
  file?: string
}

/** Environment variables that override single keys, applied on top of the file. */
const ENV_KEYS = ['BASTION_LOG_LEVEL', 'BASTION_HOST', 'BASTION_PORT', 'BASTION_USERS_FILE'] as const

function readDocument (file: string): unknown {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new BastionError('BASTION_ERR_CONFIG', `cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
  try {
    return parseYaml(text) ?? {}
  } catch (err) {
    throw new BastionError('BASTION_ERR_CONFIG', `config file ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`)
  }
}

function applyEnv (doc: unknown, env: NodeJS.ProcessEnv): unknown {
  if (!ENV_KEYS.some((k) => env[k] !== undefined)) return doc
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return doc // schema reports it
  const out = structuredClone(doc) as Record<string, any>
  if (env.BASTION_LOG_LEVEL !== undefined) {
    // Checked here, so the message names the variable and not a config key the file never had.
    if (!(LOG_LEVELS as readonly string[]).includes(env.BASTION_LOG_LEVEL)) {
      throw new BastionError('BASTION_ERR_CONFIG', `env BASTION_LOG_LEVEL: "${env.BASTION_LOG_LEVEL}" must be one of ${LOG_LEVELS.join(', ')}`)
    }
    out.log = { ...out.log, level: env.BASTION_LOG_LEVEL }
  }
  if (env.BASTION_USERS_FILE !== undefined) {
    // A .json file is the legacy JSON store; anything else is the SQLite database.
    const type = env.BASTION_USERS_FILE.endsWith('.json') ? 'file' : 'sqlite'
    out.auth = { ...out.auth, store: { ...out.auth?.store, type, path: env.BASTION_USERS_FILE } }
  }
  if (env.BASTION_HOST !== undefined || env.BASTION_PORT !== undefined) {
    const listeners: any[] = Array.isArray(out.listeners) ? out.listeners : [{ type: 'tls' }]
    const i = listeners.findIndex((l) => l?.type === undefined || l?.type === 'tls')
    // An override that finds no tls listener to apply to is refused, not ignored.
    if (i < 0) throw new BastionError('BASTION_ERR_CONFIG', `env ${env.BASTION_PORT === undefined ? 'BASTION_HOST' : 'BASTION_PORT'}: the config has no tls listener to apply it to (set host and port in the file)`)
    const port = env.BASTION_PORT === undefined ? undefined : Number(env.BASTION_PORT)
    if (port !== undefined && !Number.isInteger(port)) {
      throw new BastionError('BASTION_ERR_CONFIG', `env BASTION_PORT: "${env.BASTION_PORT}" is not a port number`)
    }
    listeners[i] = { ...listeners[i], ...(env.BASTION_HOST === undefined ? {} : { host: env.BASTION_HOST }), ...(port === undefined ? {} : { port }) }
    out.listeners = listeners
  }
  return out
}

/** Reads, overrides from env and validates the configuration once; the result is frozen. */
export function loadConfig (opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? {}
  const cwd = opts.cwd ?? process.cwd()
  const name = opts.file ?? env.BASTION_CONFIG
  if (name === undefined || name === '') {
    // No file: the two-command quick start. Development certificates are made when missing.
    return { config: parseConfig(applyEnv({}, env), cwd, { devCertificates: true, env }) }
  }
  const file = resolve(cwd, name)
  return { config: parseConfig(applyEnv(readDocument(file), env), dirname(file), { env }), file }
}
