import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import type { TlsListenerConfig } from '../config/schema.js'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'
import { assertPrivate } from '../stores/permissions.js'
import { certificateExpiry, initCertificates } from './issue.js'

/**
 * A listener's certificate at start: development certificates made when allowed and missing,
 * the private key refused when others can read it, and the expiry logged (a warning within 30 days).
 */
export async function prepareCertificates (l: Pick<TlsListenerConfig, 'cert' | 'key'>, dev: boolean, log: Logger): Promise<void> {
  if (dev && !existsSync(l.cert) && !existsSync(l.key)) {
    const dir = dirname(l.cert)
    if (l.cert !== join(dir, 'server.crt') || l.key !== join(dir, 'server.key')) {
      throw new BastionError('BASTION_ERR_CERTS', `cannot generate development certificates for ${l.cert}: name them server.crt and server.key in one folder, or create them with mqtt-bastion certs init`)
    }
    await initCertificates({ outDir: dir })
    log.warn({ event: 'certs.generated', dir }, `generated a development CA and server certificate in ${dir}; clients need ${join(dir, 'ca.crt')}`)
  }
  await assertPrivate(l.key, 'TLS private key')
  if (existsSync(l.cert)) {
    const expires = certificateExpiry(l.cert)
    const days = Math.floor((expires.getTime() - Date.now()) / 86_400_000)
    const entry = { event: 'certs.expiry', cert: l.cert, expires: expires.toISOString(), days }
    if (days < 30) log.warn(entry, 'server certificate expires within 30 days')
    else log.info(entry, 'server certificate expiry')
  }
}
