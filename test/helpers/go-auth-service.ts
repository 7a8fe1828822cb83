// A real HTTP service on 127.0.0.1 speaking mosquitto-go-auth's HTTP contract, like the Flask +
// MySQL services that answer /auth/user and /auth/acl. It records exactly what arrives.
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http'
import https from 'node:https'

export interface Received {
  method: string
  path: string
  headers: IncomingHttpHeaders
  /** The body as it arrived. */
  raw: string
  /** The body parsed by its content type: JSON keeps types, a form has strings only. */
  fields: Record<string, unknown>
}

export interface Reply {
  status?: number
  body?: string
  /** Waits this long before answering. */
  delayMs?: number
  /** Closes the socket without answering. */
  hangup?: boolean
  /** Sends the status line and part of a body, then never ends it. */
  stall?: boolean
}

export interface GoAuthService {
  port: number
  url: string
  received: Received[]
  answer: (r: Received) => Reply
  hits (path?: string): number
  close (): Promise<void>
}

function parse (req: IncomingMessage, raw: string): Record<string, unknown> {
  const type = req.headers['content-type'] ?? ''
  if (type.startsWith('application/json')) return JSON.parse(raw) as Record<string, unknown>
  if (type.startsWith('application/x-www-form-urlencoded')) return Object.fromEntries(new URLSearchParams(raw))
  return {}
}

export async function startGoAuthService (answer: (r: Received) => Reply, tls?: { cert: Buffer; key: Buffer }): Promise<GoAuthService> {
  const timers = new Set<NodeJS.Timeout>()
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8')
      const r: Received = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, raw, fields: parse(req, raw) }
      svc.received.push(r)
      const reply = svc.answer(r)
      const send = (): void => {
        if (res.destroyed) return
        if (reply.hangup === true) { req.socket.destroy(); return }
        if (reply.stall === true) { res.writeHead(200, { 'content-type': 'application/json' }); res.write('{"Ok":'); return }
        res.writeHead(reply.status ?? 200, { 'content-type': 'application/json' })
        res.end(reply.body ?? '')
      }
      if (reply.delayMs === undefined) send()
      else {
        const timer = setTimeout(() => { timers.delete(timer); send() }, reply.delayMs)
        timers.add(timer)
      }
    })
  }
  const server = tls === undefined ? http.createServer(handler) : https.createServer({ ...tls }, handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  const svc: GoAuthService = {
    port,
    url: `${tls === undefined ? 'http' : 'https'}://127.0.0.1:${port}`,
    received: [],
    answer,
    hits (path) {
      return path === undefined ? svc.received.length : svc.received.filter((r) => r.path === path).length
    },
    async close () {
      for (const t of timers) clearTimeout(t)
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
  return svc
}

/** A port nothing listens on: bound once, then released. */
export async function closedPort (): Promise<number> {
  const s = http.createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const port = (s.address() as { port: number }).port
  await new Promise<void>((resolve) => s.close(() => resolve()))
  return port
}

export interface Account { password: string; code: string; publish: string[]; subscribe: string[] }

/**
 * Answers the way a typical go-auth Flask service does: it splits `user|code` itself, checks
 * password and code, and grants exact topics (acc 2) and exact filters (acc 4).
 * Replies in the given response mode.
 */
export function flaskLike (accounts: Record<string, Account>, mode: 'json' | 'status' | 'text' = 'json'): (r: Received) => Reply {
  const reply = (ok: boolean): Reply => {
    if (mode === 'status') return { status: ok ? 200 : 403 }
    if (mode === 'text') return { body: ok ? 'ok' : 'denied' }
    return { body: JSON.stringify(ok ? { Ok: true, Error: '' } : { Ok: false, Error: 'denied' }) }
  }
  return (r) => {
    const f = r.fields
    const username = String(f.username ?? '')
    const i = username.lastIndexOf('|')
    const a = accounts[i < 0 ? username : username.slice(0, i)]
    if (r.path === '/auth/user') {
      return reply(a !== undefined && i >= 0 && a.password === f.password && a.code === username.slice(i + 1))
    }
    if (r.path === '/auth/acl') {
      const acc = Number(f.acc)
      const topic = String(f.topic)
      return reply(a !== undefined && ((acc === 2 && a.publish.includes(topic)) || (acc === 4 && a.subscribe.includes(topic))))
    }
    return { status: 404 }
  }
}
