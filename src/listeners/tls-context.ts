// The secure context of a TLS-terminating listener (tls, wss): files read and checked at start and on reload.
import { constants } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { createSecureContext, type SecureContextOptions } from 'node:tls'
import type { TlsListenerConfig } from '../config/schema.js'
import { BastionError } from '../errors.js'

/** The keys of a listener's config its secure context is built from. */
export type TlsContextConfig = Pick<TlsListenerConfig, 'host' | 'port' | 'cert' | 'key' | 'ca' | 'crl' | 'minVersion' | 'ciphers'>

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
export function contextOptions (cfg: TlsContextConfig): SecureContextOptions {
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
