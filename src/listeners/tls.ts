import { readFileSync } from 'node:fs'
import { createServer, type TLSSocket } from 'node:tls'
import type { TlsListenerConfig } from '../config/schema.js'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'
import { bind, type ConnectionHandler, type Listener } from './listener.js'

function read (path: string, what: string): Buffer {
  try {
    return readFileSync(path)
  } catch (err) {
    throw new BastionError('BASTION_ERR_CERTS', `cannot read TLS ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`)
  }
}

/**
 * The device-facing listener. With requireClientCertificate the TLS handshake itself fails for
 * a client without a certificate from the configured CA, so no MQTT byte is ever parsed for it.
 */
export async function startTlsListener (cfg: TlsListenerConfig, handle: ConnectionHandler, log: Logger): Promise<Listener> {
  const server = createServer({
    cert: read(cfg.cert, 'certificate'),
    key: read(cfg.key, 'private key'),
    ...(cfg.ca === undefined ? {} : { ca: read(cfg.ca, 'CA certificate') }),
    // TLS 1.0 and 1.1 are never offered: RFC 8996 deprecates them.
    minVersion: cfg.minVersion,
    requestCert: cfg.requireClientCertificate,
    rejectUnauthorized: cfg.requireClientCertificate
  }, (socket: TLSSocket) => { handle(socket) })

  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    log.info({ event: 'tls.handshake_failed', remote: socket.remoteAddress, reason: err.code ?? err.message }, 'TLS handshake failed')
  })
  const listener = await bind(server, 'tls', cfg.host, cfg.port)
  log.info({ event: 'listener.started', type: 'tls', host: cfg.host, port: listener.port, minVersion: cfg.minVersion, requireClientCertificate: cfg.requireClientCertificate }, 'TLS listener started')
  return listener
}
