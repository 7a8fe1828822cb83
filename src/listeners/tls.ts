import { createServer as createNetServer, type Socket } from 'node:net'
import { createServer, type TLSSocket } from 'node:tls'
import { DEFAULT_TLS_CIPHERS, type TlsListenerConfig } from '../config/schema.js'
import type { Logger } from '../log.js'
import { createLogGate, type LogGate } from '../log-gate.js'
import { assertPrivate } from '../stores/permissions.js'
import { bind, type ConnectionHandler, type Listener, type ListenerLimits } from './listener.js'
import { carryPeer, proxyGateFor } from './proxy-protocol.js'
import { contextOptions } from './tls-context.js'

/**
 * The device-facing listener. With requireClientCertificate the TLS handshake itself fails for
 * a client without a certificate from the configured CA, so no MQTT byte is ever parsed for it.
 * `logGate` bounds the refusal lines (one per address, reason and minute by default); a scanner
 * or a device stuck on a bad certificate fails a handshake per connection attempt.
 */
export async function startTlsListener (cfg: TlsListenerConfig, handle: ConnectionHandler, log: Logger, limits?: ListenerLimits, logGate: LogGate = createLogGate()): Promise<Listener> {
  function refused (event: string, remote: string | undefined, reason: string, msg: string, keyReason = reason): void {
    const open = logGate.pass(`${event}\u0000${keyReason}\u0000${remote ?? ''}`)
    if (open === undefined) return
    log.info({ event, remote, reason, ...(open.suppressed > 0 ? { suppressed: open.suppressed } : {}) }, msg)
  }
  // With proxyProtocol: trusted proxies only, each connection's header read before TLS.
  const proxy = proxyGateFor(cfg.proxyProtocol, log, limits)
  /** Behind a proxy, gives the TLS socket its client's address; false (socket closed) if it has none. */
  function proxiedPeer (socket: TLSSocket): boolean {
    if (proxy === undefined || carryPeer(socket)) return true
    // Only if Node stopped linking a TLS socket to the socket it wraps: refuse rather than
    // count every client's failures against the proxy.
    socket.destroy()
    if (logGate.pass('proxy.unlinked') !== undefined) log.error({ event: 'proxy.unlinked' }, 'connection refused: its TLS socket lost the address from the PROXY header')
    return false
  }

  /**
   * After the handshake a handshake_failure alert can only answer our no_renegotiation: an
   * OpenSSL client (Node's too) gives up that way when its renegotiation is refused, and the
   * socket closes. A client that accepts the refusal keeps its connection, unlogged. One
   * function for every socket (`this`), not a closure per connection: the socket keeps the
   * address it had when accepted (read there; behind a proxy, carryPeer's).
   */
  function onSocketError (this: TLSSocket, err: NodeJS.ErrnoException): void {
    if (err.code === 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE') refused('tls.renegotiation_refused', this.remoteAddress, 'NO_RENEGOTIATION', 'TLS renegotiation refused')
  }

  const server = createServer({
    ...contextOptions(cfg),
    ...(limits === undefined ? {} : { handshakeTimeout: limits.tlsHandshakeTimeout }),
    requestCert: cfg.requireClientCertificate,
    // Verified here rather than by Node's rejectUnauthorized, which drops the socket without
    // saying why: the operator needs to see "CERT_REVOKED" or "UNABLE_TO_VERIFY_LEAF_SIGNATURE".
    rejectUnauthorized: false
  }, (socket: TLSSocket) => {
    if (!proxiedPeer(socket)) return
    const remote = socket.remoteAddress
    if (cfg.requireClientCertificate && !socket.authorized) {
      refused('tls.handshake_failed', remote, String(socket.authorizationError ?? 'NO_CERTIFICATE'), 'client certificate refused')
      socket.destroy()
      return
    }
    socket.on('error', onSocketError)
    handle(socket)
  })

  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    if (!proxiedPeer(socket)) return
    const remote = socket.remoteAddress
    // Node only reports a handshake timeout; the socket would stay open until the peer leaves.
    socket.destroy()
    if (err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' && limits !== undefined) {
      limits.handshakeTimedOut(remote)
      return
    }
    // Keyed by OpenSSL's code: a message can differ per socket, and the key must not.
    refused('tls.handshake_failed', remote, err.code ?? err.message, 'TLS handshake failed', err.code ?? 'uncoded')
  })
  // A plain TCP server accepts and counts first: a socket over a connection limit is dropped
  // before it costs a TLS handshake. Admitted ones are handed to the TLS server (Node documents
  // emitting 'connection' for injecting sockets). Behind a proxy, the PROXY header is read
  // first, so the admission sees the device's address; the bytes after it (the ClientHello)
  // wait in the socket, and node:tls reads them from there.
  // noDelay: each MQTT packet goes out when written (TCP_NODELAY), not held back by Nagle's
  // algorithm until the peer acknowledges the previous one; writes of one turn of the event
  // loop are already coalesced into one TLS record, so nothing is gained by waiting.
  const admitted = (socket: Socket): void => {
    if (limits !== undefined && !limits.admit(socket)) {
      socket.destroy()
      return
    }
    server.emit('connection', socket)
  }
  const front = createNetServer({ noDelay: true }, (socket) => {
    if (proxy === undefined) admitted(socket)
    else proxy.accept(socket, admitted)
  })
  // Object.assign keeps bind()'s `listening` getter live (a spread would copy its value once).
  const listener: Listener = Object.assign(await bind(front, 'tls', cfg.host, cfg.port), {
    async reload () {
      // New handshakes use the new files; established connections keep theirs. A broken file
      // throws here and the old context keeps serving. A key others can read is refused as at
      // start, or the next restart would be the first to notice.
      await assertPrivate(cfg.key, 'TLS private key')
      server.setSecureContext(contextOptions(cfg))
    }
  })
  log.info({ event: 'listener.started', type: 'tls', host: cfg.host, port: listener.port, minVersion: cfg.minVersion, ...(cfg.ciphers === DEFAULT_TLS_CIPHERS ? {} : { ciphers: cfg.ciphers }), requireClientCertificate: cfg.requireClientCertificate, ...(cfg.proxyProtocol === undefined ? {} : { proxyProtocol: cfg.proxyProtocol }) }, 'TLS listener started')
  return listener
}
