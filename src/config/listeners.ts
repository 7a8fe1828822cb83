// The `listeners` key: where devices connect (tls, wss, and tcp for loopback or behind a
// TLS-terminating proxy), validated into typed listener configs.
import { resolve } from 'node:path'
import { createSecureContext } from 'node:tls'
import { bool, fail, host, int, object, oneOf, str, type Raw } from './fields.js'
import { origins, wsPath } from './wss.js'
import { parseProxyProtocol, type ProxyProtocolConfig } from './proxy-protocol.js'

export type TlsVersion = 'TLSv1.2' | 'TLSv1.3'

export interface TlsListenerConfig {
  readonly type: 'tls'
  readonly host: string
  readonly port: number
  readonly cert: string
  readonly key: string
  readonly ca?: string
  readonly minVersion: TlsVersion
  readonly requireClientCertificate: boolean
  /**
   * Who the client is, from its verified certificate: `none` (login decides), `cn` (the CN is
   * the user, no password: Mosquitto's use_identity_as_username), `subject` (the full RFC 2253
   * subject: use_subject_as_username), `bound` (a normal login whose user must equal the CN).
   */
  readonly certificateIdentity: CertificateIdentity
  /** PEM certificate revocation list; a revoked client certificate fails the handshake. */
  readonly crl?: string
  /**
   * OpenSSL cipher string, in the server's order of preference. Names starting with TLS_ set the
   * TLS 1.3 suites; without any, TLS 1.3 keeps Node's defaults. Default: DEFAULT_TLS_CIPHERS.
   */
  readonly ciphers: string
  /** Accept only connections from these proxies, each opening with a PROXY protocol header (docs/configuration.md). */
  readonly proxyProtocol?: ProxyProtocolConfig
}

/**
 * TLS 1.2 suites offered by default: ECDHE key exchange (forward secrecy) with an AEAD cipher,
 * for ECDSA keys (what `certs init` issues) and RSA keys (what many bring). No CBC suite: their
 * MAC-then-encrypt construction is what Lucky13 attacks. No RSA key exchange: it has no forward
 * secrecy. Mozilla's "intermediate" order, without its DHE suites.
 */
export const DEFAULT_TLS_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305'
].join(':')

export type CertificateIdentity = 'none' | 'cn' | 'subject' | 'bound'

export interface TcpListenerConfig {
  readonly type: 'tcp'
  readonly host: string
  readonly port: number
  readonly proxyProtocol?: ProxyProtocolConfig
}

/** MQTT over WebSockets over TLS: the TLS listener's keys and the HTTP upgrade's. */
export interface WssListenerConfig extends Omit<TlsListenerConfig, 'type' | 'proxyProtocol'> {
  readonly type: 'wss'
  /** The only HTTP path upgraded; default /mqtt. */
  readonly path: string
  /** Browser Origins allowed; a request with another Origin is refused, one without any is let in. */
  readonly origins: readonly string[]
}

export type ListenerConfig = TlsListenerConfig | TcpListenerConfig | WssListenerConfig

export function listener (value: unknown, i: number, base: string): ListenerConfig {
  const path = `listeners[${i}]`
  const type = (value as Raw | null)?.type
  if (type === 'tcp') {
    const raw = object(value, path, ['type', 'host', 'port', 'proxyProtocol'])
    const proxyProtocol = parseProxyProtocol(raw.proxyProtocol, `${path}.proxyProtocol`)
    // A plain listener carries passwords in clear text: loopback unless the operator says otherwise.
    return Object.freeze({ type, host: host(raw, `${path}.host`, '127.0.0.1'), port: int(raw, 'port', `${path}.port`, 1883, 0, 65535), ...(proxyProtocol === undefined ? {} : { proxyProtocol }) })
  }
  if (type === 'wss') {
    // 8884: the port brokers commonly give MQTT over secure WebSockets.
    const tls = tlsListener(value, path, base, ['path', 'origins'], 8884)
    return Object.freeze({ ...tls, type, path: wsPath(value as Raw, `${path}.path`), origins: origins(value as Raw, `${path}.origins`) })
  }
  if (type !== undefined && type !== 'tls') fail(`${path}.type`, 'must be tls, tcp or wss')
  const tls = tlsListener(value, path, base, ['proxyProtocol'])
  const proxyProtocol = parseProxyProtocol((value as Raw | null)?.proxyProtocol, `${path}.proxyProtocol`)
  return proxyProtocol === undefined ? tls : Object.freeze({ ...tls, proxyProtocol })
}

/**
 * An OpenSSL cipher string, checked by OpenSSL itself: a list it rejects as a whole would fail
 * at start, and a name it does not know inside a list would be dropped without a word (a typo
 * in a suite added on purpose is then a mystery refusal in the field).
 */
function cipherString (raw: Raw, path: string, minVersion: TlsVersion): string {
  const ciphers = str(raw, 'ciphers', path, DEFAULT_TLS_CIPHERS)
  const accepts = (list: string): string | undefined => {
    try {
      createSecureContext({ ciphers: list, minVersion })
      return undefined
    } catch (err) {
      return (err as Error).message.split('\n')[0]
    }
  }
  const whole = accepts(ciphers)
  if (whole !== undefined) fail(path, `OpenSSL accepts no cipher in "${ciphers}" (${whole})`)
  // OpenSSL splits on : , and space; !X, -X, +X and @STRENGTH / @SECLEVEL=n are operators.
  for (const name of ciphers.split(/[:, ]+/)) {
    if (name === '' || /^[!+@-]/.test(name)) continue
    if (accepts(name) !== undefined) fail(path, `OpenSSL knows no cipher "${name}" (see \`openssl ciphers -v\`)`)
  }
  return ciphers
}

function tlsListener (value: unknown, path: string, base: string, extraKeys: readonly string[] = [], defaultPort = 8883): TlsListenerConfig {
  const raw = object(value, path, ['type', 'host', 'port', 'cert', 'key', 'ca', 'minVersion', 'ciphers', 'requireClientCertificate', 'useIdentityAsUsername', 'useSubjectAsUsername', 'bindCertificate', 'crl', ...extraKeys])
  const minVersion = oneOf<TlsVersion>(raw, 'minVersion', `${path}.minVersion`, 'TLSv1.2', ['TLSv1.2', 'TLSv1.3'])
  const requireClientCertificate = bool(raw, 'requireClientCertificate', `${path}.requireClientCertificate`, false)
  const ca = raw.ca === undefined ? undefined : resolve(base, str(raw, 'ca', `${path}.ca`))
  if (requireClientCertificate && ca === undefined) fail(`${path}.ca`, 'is required when requireClientCertificate is true')
  const modes = ([['useIdentityAsUsername', 'cn'], ['useSubjectAsUsername', 'subject'], ['bindCertificate', 'bound']] as const)
    .filter(([k]) => bool(raw, k, `${path}.${k}`, false))
  if (modes.length > 1) fail(path, `give at most one of useIdentityAsUsername, useSubjectAsUsername, bindCertificate (got ${modes.map(([k]) => k).join(', ')})`)
  const mode = modes[0]
  if (mode !== undefined && !requireClientCertificate) fail(`${path}.${mode[0]}`, 'needs requireClientCertificate: true')
  const crl = raw.crl === undefined ? undefined : resolve(base, str(raw, 'crl', `${path}.crl`))
  if (crl !== undefined && !requireClientCertificate) fail(`${path}.crl`, 'needs requireClientCertificate: true (only client certificates are checked against it)')
  return Object.freeze({
    type: 'tls',
    host: host(raw, `${path}.host`, '0.0.0.0'),
    port: int(raw, 'port', `${path}.port`, defaultPort, 0, 65535),
    cert: resolve(base, str(raw, 'cert', `${path}.cert`, 'certs/server.crt')),
    key: resolve(base, str(raw, 'key', `${path}.key`, 'certs/server.key')),
    ...(ca === undefined ? {} : { ca }),
    minVersion,
    ciphers: cipherString(raw, `${path}.ciphers`, minVersion),
    requireClientCertificate,
    certificateIdentity: mode?.[1] ?? 'none',
    ...(crl === undefined ? {} : { crl })
  })
}
