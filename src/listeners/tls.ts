import { constants } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer as createNetServer } from 'node:net'
import { dirname } from 'node:path'
import { createSecureContext, createServer, type SecureContextOptions, type TLSSocket } from 'node:tls'
import { DEFAULT_TLS_CIPHERS, type TlsListenerConfig } from '../config/schema.js'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'
import { createLogGate, type LogGate } from '../log-gate.js'
import { assertPrivate } from '../stores/permissions.js'
import { bind, type ConnectionHandler, type Listener, type ListenerLimits } from './listener.js'

function read (path: string, what: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err)
    // Relative paths in a config file resolve against its own folder, not the working directory.
    const hint = code !== 'ENOENT'
      ? ''
      : what === 'certificate revocation list'
        // A CRL exists once a first client certificate was revoked: it is `certs revoke`'s output.
        ? `; it is written by: mqtt-bastion certs revoke NAME --out ${dirname(path)} (or remove crl: until a certificate is revoked)`
        : `; create the CA and server certificate with: mqtt-bastion certs init --out ${dirname(path)}`
    throw new BastionError('BASTION_ERR_CERTS', `cannot read TLS ${what} ${path}: ${code}${hint}`)
  }
}

/** Files of the secure context, read afresh at start and on every reload. */
function contextOptions (cfg: TlsListenerConfig): SecureContextOptions {
  const options: SecureContextOptions = {
    cert: read(cfg.cert, 'certificate'),
    key: read(cfg.key, 'private key'),
    ...(cfg.ca === undefined ? {} : { ca: read(cfg.ca, 'CA certificate') }),
    // Node turns on OpenSSL's CRL checks when a CRL is given: a revoked client certificate
    // fails the handshake.
    ...(cfg.crl === undefined ? {} : { crl: read(cfg.crl, 'certificate revocation list') }),
    // TLS 1.0 and 1.1 are never offered: RFC 8996 deprecates them.
    minVersion: cfg.minVersion,
    // By default ECDHE + AEAD only on TLS 1.2 (DEFAULT_TLS_CIPHERS); TLS 1.3 keeps Node's suites.
    ciphers: cfg.ciphers,
    honorCipherOrder: true,
    // Node's own guard lets a client renegotiate 3 times per 10 minutes, each a full handshake
    // the server pays for. OpenSSL refuses every one instead: it answers the ClientHello with a
    // no_renegotiation alert (RFC 5246 7.2.2) and the connection stays on its first handshake.
    secureOptions: constants.SSL_OP_NO_RENEGOTIATION
  }
  try {
    // Build once here so a key that does not match its certificate, or a CRL that is not one,
    // fails with a message naming the files instead of inside the server.
    createSecureContext(options)
  } catch (err) {
    throw new BastionError('BASTION_ERR_CERTS', `TLS files of listener ${cfg.host}:${cfg.port} are unusable (${cfg.cert}, ${cfg.key}${cfg.crl === undefined ? '' : ', ' + cfg.crl}): ${(err as Error).message}`)
  }
  return options
}

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

  const server = createServer({
    ...contextOptions(cfg),
    ...(limits === undefined ? {} : { handshakeTimeout: limits.tlsHandshakeTimeout }),
    requestCert: cfg.requireClientCertificate,
    // Verified here rather than by Node's rejectUnauthorized, which drops the socket without
    // saying why: the operator needs to see "CERT_REVOKED" or "UNABLE_TO_VERIFY_LEAF_SIGNATURE".
    rejectUnauthorized: false
  }, (socket: TLSSocket) => {
    const remote = socket.remoteAddress
    if (cfg.requireClientCertificate && !socket.authorized) {
      refused('tls.handshake_failed', remote, String(socket.authorizationError ?? 'NO_CERTIFICATE'), 'client certificate refused')
      socket.destroy()
      return
    }
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // After the handshake a handshake_failure alert can only answer our no_renegotiation: an
      // OpenSSL client (Node's too) gives up that way when its renegotiation is refused, and
      // the socket closes. A client that accepts the refusal keeps its connection, unlogged.
      if (err.code === 'ERR_SSL_SSLV3_ALERT_HANDSHAKE_FAILURE') refused('tls.renegotiation_refused', remote, 'NO_RENEGOTIATION', 'TLS renegotiation refused')
    })
    handle(socket)
  })

  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
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
  // emitting 'connection' for injecting sockets).
  // noDelay: each MQTT packet goes out when written (TCP_NODELAY), not held back by Nagle's
  // algorithm until the peer acknowledges the previous one; writes of one turn of the event
  // loop are already coalesced into one TLS record, so nothing is gained by waiting.
  const front = createNetServer({ noDelay: true }, (socket) => {
    if (limits !== undefined && !limits.admit(socket)) {
      socket.destroy()
      return
    }
    server.emit('connection', socket)
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
  log.info({ event: 'listener.started', type: 'tls', host: cfg.host, port: listener.port, minVersion: cfg.minVersion, ...(cfg.ciphers === DEFAULT_TLS_CIPHERS ? {} : { ciphers: cfg.ciphers }), requireClientCertificate: cfg.requireClientCertificate }, 'TLS listener started')
  return listener
}
