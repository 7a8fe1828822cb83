import type { IncomingMessage, ServerResponse } from 'node:http'
import { STATUS_CODES } from 'node:http'
import { createServer } from 'node:https'
import { createServer as createNetServer, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import { createWebSocketStream, WebSocketServer, type WebSocket } from 'ws'
import { DEFAULT_TLS_CIPHERS, type WssListenerConfig } from '../config/schema.js'
import type { Logger } from '../log.js'
import { createLogGate, type LogGate } from '../log-gate.js'
import { assertPrivate } from '../stores/permissions.js'
import { bind, type ConnectionHandler, type Listener, type ListenerLimits } from './listener.js'
import { contextOptions } from './tls-context.js'

/** RFC 6455 1.9: the subprotocol MQTT over WebSockets is spoken under (MQTT 5.0 6.0). */
const SUBPROTOCOL = 'mqtt'
/** Without limits (embedding, tests): as config `limits` defaults. */
const DEFAULT_TIMEOUT_MS = 10_000
const DEFAULT_MAX_PAYLOAD = 65_536
/** A request's path or Origin is the client's text: logged, but never at any length (nor a query, which may carry a token). */
const shown = (v: string | undefined): string | undefined => v === undefined || v.length <= 200 ? v : `${v.slice(0, 200)}...`

/** The request's path without its query; compared byte for byte with the configured one. */
const pathOf = (url: string | undefined): string => (url ?? '').split('?')[0] as string

/** Every subprotocol the client offers (Sec-WebSocket-Protocol, comma separated, maybe repeated). */
const offered = (header: string | undefined): string[] => (header ?? '').split(',').map((p) => p.trim())

/**
 * The WebSocket as the broker sees a connection: a byte stream of MQTT packets (each WebSocket
 * message is a run of them, MQTT 5.0 6.0), carrying what the broker reads from a TLS socket: the
 * peer's address (limits, lockout, logs), byte counts (metrics; they include WebSocket framing)
 * and the verified client certificate (certificate identity modes).
 */
function asConnection (stream: Duplex, socket: TLSSocket): Socket {
  Object.defineProperties(stream, {
    remoteAddress: { value: socket.remoteAddress },
    remotePort: { value: socket.remotePort },
    authorized: { value: socket.authorized },
    bytesRead: { get: () => socket.bytesRead },
    bytesWritten: { get: () => socket.bytesWritten },
    getPeerCertificate: { value: socket.getPeerCertificate.bind(socket) },
    getPeerX509Certificate: { value: socket.getPeerX509Certificate.bind(socket) }
  })
  return stream as unknown as Socket
}

/**
 * MQTT over secure WebSockets. A socket is admitted (connection limits, locked-out addresses)
 * before TLS, as on the TLS listener; after the handshake it has the same time again to send its
 * HTTP upgrade, which is refused with a plain HTTP answer unless it asks for `cfg.path`, offers
 * the `mqtt` subprotocol and carries no Origin header or one of `cfg.origins`. Browsers always
 * send Origin: an empty list refuses every web page. Devices and native clients send none.
 * Refusals are logged once per address, reason and minute (`logGate`).
 */
export async function startWssListener (cfg: WssListenerConfig, handle: ConnectionHandler, log: Logger, limits?: ListenerLimits, logGate: LogGate = createLogGate()): Promise<Listener> {
  const timeoutMs = limits?.tlsHandshakeTimeout ?? DEFAULT_TIMEOUT_MS
  const allowed = new Set(cfg.origins)

  function refused (event: string, remote: string | undefined, reason: string, msg: string, fields: Record<string, unknown> = {}): void {
    const open = logGate.pass(`${event}\u0000${reason}\u0000${remote ?? ''}`)
    if (open === undefined) return
    log.info({ event, remote, reason, ...fields, ...(open.suppressed > 0 ? { suppressed: open.suppressed } : {}) }, msg)
  }

  /** Answers an upgrade request with a bare HTTP status and closes; no WebSocket byte is sent. */
  function refuseUpgrade (socket: Duplex, status: number, reason: string, req: IncomingMessage, fields: Record<string, unknown> = {}): void {
    refused('wss.refused', req.socket.remoteAddress, reason, 'WebSocket upgrade refused', { status, path: shown(pathOf(req.url)), ...fields })
    socket.on('error', () => socket.destroy())
    socket.once('finish', () => socket.destroy())
    socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
  }

  // Sockets past TLS that have not asked for their upgrade yet, each with its deadline.
  const waiting = new Map<TLSSocket, NodeJS.Timeout>()

  const server = createServer({
    ...contextOptions(cfg),
    ...(limits === undefined ? {} : { handshakeTimeout: limits.tlsHandshakeTimeout }),
    requestCert: cfg.requireClientCertificate,
    // As on the TLS listener: verified below, so the refusal is logged with its reason.
    rejectUnauthorized: false
  }, (req: IncomingMessage, res: ServerResponse) => {
    // Plain HTTP here carries no MQTT: 426 tells a client that asked for the right path what to do.
    const status = pathOf(req.url) === cfg.path ? 426 : 404
    refused('wss.refused', req.socket.remoteAddress, 'not_upgrade', 'HTTP request without WebSocket upgrade refused', { status, path: shown(pathOf(req.url)) })
    res.writeHead(status, { Connection: 'close', 'Content-Length': 0, ...(status === 426 ? { Upgrade: 'websocket' } : {}) }).end()
  })

  server.on('secureConnection', (socket: TLSSocket) => {
    if (cfg.requireClientCertificate && !socket.authorized) {
      refused('tls.handshake_failed', socket.remoteAddress, String(socket.authorizationError ?? 'NO_CERTIFICATE'), 'client certificate refused')
      socket.destroy()
      return
    }
    // Node enforces its HTTP timeouts (minutes) only on a server that listens itself, and this
    // one is fed by `front`: a socket that holds its request back (slowloris) would keep its
    // connection slot, so it gets the handshake's time.
    const timer = setTimeout(() => {
      refused('wss.refused', socket.remoteAddress, 'upgrade_timeout', 'connection closed: no WebSocket upgrade in time')
      socket.destroy()
    }, timeoutMs)
    waiting.set(socket, timer)
    socket.once('close', () => {
      clearTimeout(timer)
      waiting.delete(socket)
    })
  })

  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    const remote = socket.remoteAddress
    socket.destroy()
    if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' && limits !== undefined) {
      limits.handshakeTimedOut(remote)
      return
    }
    refused('tls.handshake_failed', remote, err.code ?? 'uncoded', 'TLS handshake failed')
  })

  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    // One WebSocket message is at most one packet of the largest size the broker accepts (a
    // client that batches packets stays under it too); ws closes a bigger one with 1009 before
    // buffering it.
    maxPayload: limits?.maxPacketSize ?? DEFAULT_MAX_PAYLOAD,
    // No permessage-deflate: a few kilobytes that inflate to maxPayload each would cost the
    // broker memory and CPU per message (a compression bomb), and MQTT payloads of sensors are
    // small or already compressed.
    perMessageDeflate: false,
    handleProtocols: (protocols) => protocols.has(SUBPROTOCOL) ? SUBPROTOCOL : false
  })
  // What ws itself refuses (not GET, no Sec-WebSocket-Key, unknown version): logged as ours are.
  wss.on('wsClientError', (err: Error, socket: Duplex, req: IncomingMessage) => {
    refuseUpgrade(socket, 400, 'bad_handshake', req, { error: err.message })
  })

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const tlsSocket = req.socket as TLSSocket
    clearTimeout(waiting.get(tlsSocket))
    waiting.delete(tlsSocket)
    if (pathOf(req.url) !== cfg.path) {
      refuseUpgrade(socket, 404, 'path', req)
      return
    }
    // Browsers send Origin (RFC 6454), old drafts Sec-WebSocket-Origin; each one sent must be allowed.
    for (const name of ['origin', 'sec-websocket-origin'] as const) {
      const value = req.headers[name]
      const origin = Array.isArray(value) ? value.join(', ') : value
      if (origin !== undefined && !allowed.has(origin)) {
        refuseUpgrade(socket, 403, 'origin', req, { origin: shown(origin) })
        return
      }
    }
    if (!offered(req.headers['sec-websocket-protocol']).includes(SUBPROTOCOL)) {
      refuseUpgrade(socket, 400, 'subprotocol', req)
      return
    }
    wss.handleUpgrade(req, socket, head, (ws: WebSocket) => {
      handle(asConnection(createWebSocketStream(ws), tlsSocket))
    })
  })

  // Admitted before TLS, as the TLS listener does (tls.ts says why), then handed to the server.
  const front = createNetServer({ noDelay: true }, (socket) => {
    if (limits !== undefined && !limits.admit(socket)) {
      socket.destroy()
      return
    }
    server.emit('connection', socket)
  })
  const bound = await bind(front, 'wss', cfg.host, cfg.port)
  const closeFront = bound.close.bind(bound)
  // Object.assign keeps bind()'s `listening` getter live.
  const listener: Listener = Object.assign(bound, {
    async reload () {
      await assertPrivate(cfg.key, 'TLS private key')
      server.setSecureContext(contextOptions(cfg))
    },
    async close () {
      // Upgraded connections are the broker's to close; those still on HTTP are ours.
      for (const socket of waiting.keys()) socket.destroy()
      wss.close()
      await closeFront()
    }
  })
  log.info({ event: 'listener.started', type: 'wss', host: cfg.host, port: listener.port, path: cfg.path, origins: cfg.origins, minVersion: cfg.minVersion, ...(cfg.ciphers === DEFAULT_TLS_CIPHERS ? {} : { ciphers: cfg.ciphers }), requireClientCertificate: cfg.requireClientCertificate }, 'WebSocket (wss) listener started')
  return listener
}
