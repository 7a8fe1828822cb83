import { randomBytes } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { parse as parseYaml } from 'yaml'
import { isValidSecret } from '../crypto/totp.js'
import { BastionError } from '../errors.js'
import { assertPrivate } from '../stores/permissions.js'
import { USERNAME_PATTERN } from '../types.js'

/** The device side, validated once and frozen; secrets are held in memory only. */
export interface DeviceConfig {
  /** `mqtts://host:port` as written (for messages; never carries credentials). */
  readonly url: string
  readonly host: string
  readonly port: number
  readonly ca: Buffer
  readonly cert?: Buffer
  readonly key?: Buffer
  readonly user: string
  readonly password: string
  /** Absent: the broker does not ask for a code (e.g. a mosquitto password_file without TOTP). */
  readonly totpSecret?: string
  readonly clientId: string
  readonly prefix: string
  readonly willPayload: string
  /** Seconds; bounds a whole run: connect, every PUBACK/SUBACK and the DISCONNECT. */
  readonly timeout: number
}

const KEYS = ['url', 'ca', 'cert', 'key', 'user', 'password', 'passwordFile', 'totpSecret', 'totpSecretFile', 'clientId', 'prefix', 'will', 'timeout']
const CLIENT_ID = /^[\x21-\x7e]{1,128}$/
const TOPIC_LEVEL = /^[^/+#$\0]{1,64}$/

function fail (key: string, message: string): never {
  throw new BastionError('BASTION_ERR_CONFIG', `device config ${key}: ${message}`)
}

function str (doc: Record<string, unknown>, key: string): string | undefined {
  const v = doc[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'string' || v === '') fail(key, 'must be a non-empty string')
  return v
}

async function readKeyFile (key: string, path: string, secret: boolean): Promise<Buffer> {
  if (secret) await assertPrivate(path, `device config ${key}`)
  try {
    return await readFile(path)
  } catch (err) {
    fail(key, `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
}

function parseUrl (raw: string): { host: string; port: number } {
  let u: URL
  try {
    u = new URL(raw)
  } catch {
    fail('url', `must be mqtts://HOST[:PORT], got "${raw}"`)
  }
  // Plain mqtt:// would send the password and code in clear text.
  if (u.protocol !== 'mqtts:') fail('url', `must start with mqtts:// (TLS), got "${u.protocol}//"`)
  if (u.username !== '' || u.password !== '') fail('url', 'must not carry a user or password; use the user and password keys')
  if (u.hostname === '') fail('url', 'has no host')
  if ((u.pathname !== '' && u.pathname !== '/') || u.search !== '' || u.hash !== '') fail('url', 'must be mqtts://HOST[:PORT] with nothing after the port')
  const port = u.port === '' ? 8883 : Number(u.port)
  if (port === 0) fail('url', 'port 0 is not a port to connect to')
  return { host: u.hostname.replace(/^\[(.*)\]$/, '$1'), port }
}

/** One of `key` (inline, the config file must then be private) or `key + File` (that file must be). */
async function secretValue (doc: Record<string, unknown>, key: string, file: string, base: string, required: boolean): Promise<string | undefined> {
  const inline = str(doc, key)
  const path = str(doc, `${key}File`)
  if (inline !== undefined && path !== undefined) fail(key, `give ${key} or ${key}File, not both`)
  if (inline !== undefined) {
    await assertPrivate(file, `device config file (it holds ${key})`)
    return inline
  }
  if (path === undefined) {
    if (required) fail(key, `missing: give ${key} or ${key}File`)
    return undefined
  }
  const text = (await readKeyFile(`${key}File`, resolve(base, path), true)).toString('utf8')
  const first = text.split(/\r?\n/)[0] ?? ''
  if (first === '') fail(`${key}File`, `${resolve(base, path)} is empty: the value is its first line`)
  return first
}

export async function loadDeviceConfig (file: string): Promise<DeviceConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new BastionError('BASTION_ERR_CONFIG', `cannot read device config ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
  let doc: unknown
  try {
    doc = parseYaml(text)
  } catch (err) {
    throw new BastionError('BASTION_ERR_CONFIG', `device config ${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`)
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new BastionError('BASTION_ERR_CONFIG', `device config ${file}: must be a YAML mapping of keys (url, ca, user, ...)`)
  }
  return await validate(doc as Record<string, unknown>, file)
}

async function validate (doc: Record<string, unknown>, file: string): Promise<DeviceConfig> {
  for (const k of Object.keys(doc)) if (!KEYS.includes(k)) fail(k, `unknown key (known: ${KEYS.join(', ')})`)
  const base = dirname(file)

  const url = str(doc, 'url') ?? fail('url', 'missing: e.g. mqtts://broker.example.com:8883')
  const { host, port } = parseUrl(url)
  const user = str(doc, 'user') ?? fail('user', 'missing')
  if (!USERNAME_PATTERN.test(user)) fail('user', 'must be 1-64 letters, digits, _ . -')

  const caPath = str(doc, 'ca') ?? fail('ca', 'missing: the CA certificate file that signed the broker certificate')
  const ca = await readKeyFile('ca', resolve(base, caPath), false)
  const certPath = str(doc, 'cert')
  const keyPath = str(doc, 'key')
  if ((certPath === undefined) !== (keyPath === undefined)) fail(certPath === undefined ? 'cert' : 'key', 'cert and key go together')
  const cert = certPath === undefined ? undefined : await readKeyFile('cert', resolve(base, certPath), false)
  const key = keyPath === undefined ? undefined : await readKeyFile('key', resolve(base, keyPath), true)

  const password = await secretValue(doc, 'password', file, base, true) as string
  const rawSecret = await secretValue(doc, 'totpSecret', file, base, false)
  const totpSecret = rawSecret?.replace(/\s+/g, '').toUpperCase()
  if (totpSecret !== undefined && !isValidSecret(totpSecret)) {
    fail(doc.totpSecret === undefined ? 'totpSecretFile' : 'totpSecret', 'must be base32 (A-Z, 2-7) of at least 26 characters')
  }

  const clientId = str(doc, 'clientId') ?? `${user}-${randomBytes(4).toString('hex')}`
  if (!CLIENT_ID.test(clientId)) fail('clientId', 'must be 1-128 printable ASCII characters without spaces')
  const prefix = str(doc, 'prefix') ?? 'metrics'
  if (!prefix.split('/').every((l) => TOPIC_LEVEL.test(l))) fail('prefix', 'must be topic levels without + # $ or empty levels')

  let willPayload = 'unsafe_disconnection'
  if (doc.will !== undefined && doc.will !== null) {
    const will = doc.will
    if (typeof will !== 'object' || Array.isArray(will)) fail('will', 'must be a mapping: { payload: TEXT }')
    for (const k of Object.keys(will)) if (k !== 'payload') fail(`will.${k}`, 'unknown key (known: payload)')
    const p = (will as Record<string, unknown>).payload
    if (p !== undefined) {
      if (typeof p !== 'string' || p === '') fail('will.payload', 'must be a non-empty string')
      willPayload = p
    }
  }

  const timeout = doc.timeout ?? 10
  if (typeof timeout !== 'number' || !Number.isFinite(timeout) || timeout <= 0 || timeout > 300) fail('timeout', 'must be a number of seconds from 0 to 300')

  return Object.freeze({
    url, host, port, ca, user, password, clientId, prefix, willPayload, timeout,
    ...(cert === undefined ? {} : { cert }),
    ...(key === undefined ? {} : { key }),
    ...(totpSecret === undefined ? {} : { totpSecret })
  })
}
