import type { TLSSocket } from 'node:tls'
import type { CertificateIdentity } from '../config/schema.js'
import { USERNAME_PATTERN } from '../types.js'
import type { LoginResult } from './authenticator.js'
import { accountPart } from './login.js'

/** The CN of the client's verified certificate; undefined without one. */
export function certCommonName (conn: unknown): string | undefined {
  const sock = conn as Partial<TLSSocket>
  if (sock.authorized !== true || typeof sock.getPeerCertificate !== 'function') return undefined
  const cn = sock.getPeerCertificate().subject?.CN
  return typeof cn === 'string' ? cn : undefined
}

/** The verified certificate's subject in RFC 2253 order (most specific first), as Mosquitto prints it. */
function certSubject (conn: unknown): string | undefined {
  const sock = conn as Partial<TLSSocket>
  if (sock.authorized !== true || typeof sock.getPeerX509Certificate !== 'function') return undefined
  const subject = sock.getPeerX509Certificate()?.subject
  return subject === undefined ? undefined : subject.split('\n').reverse().join(',')
}

// A subject becomes a topic level in policies and wills: nothing that leaves a level.
const SUBJECT_PATTERN = /^[^/+#$\u0000]{1,256}$/

/**
 * The certificate's part of a login. `cn` / `subject`: the whole answer (Mosquitto's
 * use_identity_as_username / use_subject_as_username: the CA vouches for the user; username and
 * password are not checked). `bound`: a refusal when the certificate names another account.
 * undefined: the credentials decide (the authenticator).
 */
export function certificateLogin (conn: unknown, mode: CertificateIdentity, username: string | undefined): LoginResult | undefined {
  if (mode === 'cn' || mode === 'subject') {
    const user = mode === 'cn' ? certCommonName(conn) : certSubject(conn)
    if (user === undefined) return { ok: false, reason: 'no_certificate' }
    if (!(mode === 'cn' ? USERNAME_PATTERN : SUBJECT_PATTERN).test(user)) return { ok: false, reason: 'invalid_username' }
    return { ok: true, user }
  }
  if (mode === 'bound' && username !== undefined && username !== '') {
    // Checked before any password work so a stolen certificate cannot be used to probe
    // another account's password, and no code is burnt.
    const cn = certCommonName(conn)
    if (cn === undefined) return { ok: false, reason: 'no_certificate' }
    if (cn !== accountPart(username)) return { ok: false, reason: 'certificate_mismatch', user: USERNAME_PATTERN.test(cn) ? cn : undefined }
  }
  return undefined
}
