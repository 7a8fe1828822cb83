// A client for mosquitto-go-auth's HTTP backend contract (backends/http.go), so an auth service
// written for go-auth (e.g. Flask answering /auth/user and /auth/acl) works unchanged.
import { createHmac, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import type { HttpBackendConfig } from '../config/schema.js'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'
import { USERNAME_PATTERN } from '../types.js'
import type { Authenticator } from './authenticator.js'
import { accountPart } from './login.js'

/** The `acc` values go-auth forwards from mosquitto (MOSQ_ACL_*). 3 (readwrite) is never sent. */
export const ACC_READ = 1
export const ACC_WRITE = 2
export const ACC_SUBSCRIBE = 4
export type GoAuthAcc = typeof ACC_READ | typeof ACC_WRITE | typeof ACC_SUBSCRIBE

/** Resolves true (allow) or false (deny); rejects with BASTION_ERR_BACKEND_UNAVAILABLE. */
export interface GoAuthClient {
  checkUser (username: string, password: string, clientId: string): Promise<boolean>
  checkAcl (username: string, clientId: string, topic: string, acc: GoAuthAcc): Promise<boolean>
  close (): Promise<void>
}

// An auth answer is a few bytes; a bigger body is not one, and is not buffered without end.
const MAX_BODY = 64 * 1024
// Distinct positive answers kept at most; the oldest go first.
const MAX_CACHE = 10_000

class Unreadable extends Error {}

/**
 * The go-auth JSON answer `{"ok": bool, "error": string}`, read the way Go's encoding/json
 * fills `HTTPResponse`: keys match case-insensitively (`Ok`, `OK`), the last one wins, `null`
 * changes nothing, and a value of the wrong type is an error, not a "no".
 */
function jsonVerdict (body: Buffer): boolean {
  let parsed: unknown
  try {
    parsed = JSON.parse(body.toString('utf8'))
  } catch {
    throw new Unreadable('response is not JSON')
  }
  if (parsed === null) return false
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new Unreadable('response is not a JSON object')
  let ok = false
  for (const [key, value] of Object.entries(parsed)) {
    const k = key.toLowerCase()
    if (k === 'ok') {
      if (typeof value === 'boolean') ok = value
      else if (value !== null) throw new Unreadable('"ok" is not a boolean')
    } else if (k === 'error' && value !== null && typeof value !== 'string') {
      throw new Unreadable('"error" is not a string')
    }
  }
  return ok
}

/**
 * go-auth answers "no" for any status outside 2xx. Redirects are not followed (Go's client
 * would): an auth answer has no business moving, so a 3xx is a "no" as well.
 * go-auth (since 1.4.3) turns a 5xx into an error (MOSQ_ERR_UNKNOWN); here, by the project's
 * contract, a 5xx is the backend's answer "no" like any other non-2xx: the service did answer.
 */
function verdict (mode: HttpBackendConfig['responseMode'], status: number, body: Buffer): boolean {
  // A 5xx is the service failing (its database down, say), not its verdict: like go-auth
  // since 1.4.3 it is an error, so the login gets 0x88 "server unavailable", not "bad password".
  if (status >= 500) throw new Unreadable(`HTTP ${status}`)
  if (status < 200 || status >= 300) return false
  switch (mode) {
    case 'status': return true
    // Exactly the two bytes `ok`, as go-auth compares them: no trimming.
    case 'text': return body.length === 2 && body.toString('latin1') === 'ok'
    case 'json': return jsonVerdict(body)
  }
}

/** The body go-auth sends: JSON with sorted keys (Go's map order), or a form with strings only. */
function encode (mode: HttpBackendConfig['paramsMode'], fields: Record<string, string | number>): { type: string; body: Buffer } {
  const keys = Object.keys(fields).sort()
  if (mode === 'form') {
    const form = new URLSearchParams(keys.map((k) => [k, String(fields[k])]))
    return { type: 'application/x-www-form-urlencoded', body: Buffer.from(form.toString()) }
  }
  return { type: 'application/json', body: Buffer.from(JSON.stringify(Object.fromEntries(keys.map((k) => [k, fields[k]])))) }
}

function describe (err: unknown): string {
  const e = err as NodeJS.ErrnoException
  return typeof e?.code === 'string' ? `${e.code}${e.message === undefined ? '' : `: ${e.message}`}` : String(e?.message ?? e)
}

export function createGoAuthClient (cfg: HttpBackendConfig, log: Logger): GoAuthClient {
  const base = new URL(cfg.url)
  const tls = base.protocol === 'https:'
  let ca: Buffer | undefined
  if (cfg.ca !== undefined) {
    try {
      ca = readFileSync(cfg.ca)
    } catch (err) {
      throw new BastionError('BASTION_ERR_CONFIG', `auth.store.ca ${cfg.ca}: ${describe(err)}`, { cause: err })
    }
  }
  // One keep-alive agent per client, so close() ends its sockets and an https CA stays local.
  // Peers are always verified (go-auth's default http_verify_peer false is not offered).
  const agent = tls
    ? new https.Agent({ keepAlive: true, ...(ca === undefined ? {} : { ca }) })
    : new http.Agent({ keepAlive: true })
  // Cache keys are HMACs under a key that lives only in this process: a heap dump shows neither
  // the password nor a fast unsalted hash of it that could be guessed offline.
  const cacheKey = randomBytes(32)
  const cache = new Map<string, number>()
  let downSince: number | undefined

  function fault (err: unknown): BastionError {
    const reason = err instanceof Unreadable ? err.message : describe(err)
    if (downSince === undefined) {
      downSince = Date.now()
      log.warn({ event: 'backend.unavailable', backend: 'http', reason }, 'http auth backend unavailable; refusing until it answers')
    }
    return new BastionError('BASTION_ERR_BACKEND_UNAVAILABLE', `http auth backend could not answer: ${reason}`, { cause: err })
  }

  function answered (): void {
    if (downSince === undefined) return
    log.info({ event: 'backend.recovered', backend: 'http', downMs: Date.now() - downSince }, 'http auth backend answers again')
    downSince = undefined
  }

  /** One POST; the timeout bounds the whole exchange, body included (Go's Client.Timeout). */
  function post (path: string, fields: Record<string, string | number>): Promise<boolean> {
    const target = new URL(base.pathname.replace(/\/+$/, '') + path, base)
    const { type, body } = encode(cfg.paramsMode, fields)
    return new Promise<boolean>((resolve, reject) => {
      let settled = false
      const finish = (err: unknown, value?: boolean): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        if (err === undefined) {
          answered()
          resolve(value as boolean)
        } else {
          req.destroy()
          reject(fault(err))
        }
      }
      const req = (tls ? https : http).request(target, {
        method: 'POST',
        agent,
        headers: { 'content-type': type, 'content-length': body.length, 'user-agent': 'mqtt-bastion (go-auth http contract)' }
      }, (res) => {
        const chunks: Buffer[] = []
        let size = 0
        res.on('data', (chunk: Buffer) => {
          size += chunk.length
          if (size > MAX_BODY) finish(new Unreadable(`response larger than ${MAX_BODY} bytes`))
          else chunks.push(chunk)
        })
        res.on('end', () => {
          try {
            finish(undefined, verdict(cfg.responseMode, res.statusCode ?? 0, Buffer.concat(chunks)))
          } catch (err) {
            finish(err)
          }
        })
        res.on('error', finish)
        res.on('close', () => { if (!res.complete) finish(new Unreadable('response cut short')) })
      })
      const timer = setTimeout(() => finish(new Unreadable(`no answer within ${cfg.timeout} ms`)), cfg.timeout)
      req.on('error', finish)
      req.end(body)
    })
  }

  function keyOf (parts: readonly string[]): string {
    return createHmac('sha256', cacheKey).update(JSON.stringify(parts)).digest('base64')
  }

  /** Only "yes" is reused: a "no" or a fault is asked again next time (go-auth caches both). */
  async function cached (parts: readonly string[], ask: () => Promise<boolean>): Promise<boolean> {
    if (cfg.cacheTtl <= 0) return await ask()
    const key = keyOf(parts)
    const until = cache.get(key)
    const now = Date.now()
    if (until !== undefined) {
      if (until > now) return true
      cache.delete(key)
    }
    const ok = await ask()
    if (ok) {
      cache.set(key, Date.now() + cfg.cacheTtl * 1000)
      if (cache.size > MAX_CACHE) cache.delete(cache.keys().next().value as string)
    }
    return ok
  }

  return {
    async checkUser (username, password, clientId) {
      // The clientid is part of the key: the service sees it and may decide on it.
      return await cached(['user', username, password, clientId],
        async () => await post(cfg.userPath, { username, password, clientid: clientId }))
    },
    async checkAcl (username, clientId, topic, acc) {
      return await cached(['acl', username, clientId, topic, String(acc)],
        async () => await post(cfg.aclPath, { username, clientid: clientId, topic, acc }))
    },
    async close () {
      cache.clear()
      agent.destroy()
    }
  }
}

/**
 * Logins decided by a service speaking mosquitto-go-auth's HTTP contract. The MQTT username
 * goes to it verbatim (`alice|123456`: the service checks the code itself), with the password
 * and the client id, as go-auth under mosquitto sends them.
 *
 * Pass `client` to share one connection pool and one outage log with the HTTP ACL policy;
 * a client passed in is closed by its owner, not here.
 */
export function createHttpAuthenticator (cfg: HttpBackendConfig, log: Logger, client?: GoAuthClient): Authenticator {
  const backend = client ?? createGoAuthClient(cfg, log)
  return {
    name: 'http',
    async login (req) {
      if (req.username === undefined || req.username === '') return { ok: false, reason: 'anonymous' }
      const user = accountPart(req.username)
      // The account becomes a topic level in logs, policies and wills: it is checked here even
      // though the service decides, so nothing it accepts can leave a level.
      if (!USERNAME_PATTERN.test(user)) return { ok: false, reason: 'invalid_username' }
      if (req.password === undefined || req.password.length === 0) return { ok: false, reason: 'missing_password', user }
      const ok = await backend.checkUser(req.username, req.password.toString('utf8'), req.clientId)
      return ok ? { ok: true, user } : { ok: false, reason: 'backend_denied', user }
    },
    async close () {
      if (client === undefined) await backend.close()
    }
  }
}
