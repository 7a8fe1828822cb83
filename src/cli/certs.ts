import { resolve } from 'node:path'
import { initCertificates, issueClientCertificate, parseSans } from '../certs/issue.js'
import { revokeCertificate } from '../certs/revoke.js'
import { expectPositionals, intFlag, parse, stringFlag, UsageError } from './args.js'

export const CERTS_HELP = `Usage:
  mqtt-bastion certs init --out DIR [--san DNS:a,IP:b,...] [--cn NAME] [--days N] [--force]
  mqtt-bastion certs client NAME --out DIR [--days N] [--force]
  mqtt-bastion certs revoke NAME --out DIR

certs init     Creates a private CA and a server certificate signed by it, in DIR:
               ca.crt, ca.key, server.crt, server.key (keys are mode 0600).
               Keys are ECDSA P-256 with SHA-256.
  --san LIST   Subject Alternative Names of the server certificate, comma separated
               (default: DNS:localhost,IP:127.0.0.1). Clients check the host they dial
               against these.
  --cn NAME    Common name of the server certificate (default: localhost).
  --days N     Validity of the server certificate in days (default: 825).
  --force      Overwrite existing files.

certs client   Issues NAME.crt and NAME.key in DIR, signed by DIR/ca.crt and DIR/ca.key,
               with CN=NAME, for listeners with requireClientCertificate: true.

certs revoke   Adds DIR/NAME.crt to DIR/crl.pem, the CA's certificate revocation list
               (created when missing, signed with DIR/ca.key). A listener with
               crl: DIR/crl.pem refuses revoked certificates in the TLS handshake; a
               running broker reads the new list on SIGHUP.
`

export async function certsCommand (argv: string[], out: (s: string) => void): Promise<void> {
  const [sub, ...rest] = argv
  if (sub === undefined || sub === '--help' || sub === '-h') { out(CERTS_HELP); return }
  if (sub === 'init') {
    const { values, positionals } = parse(rest, { out: { type: 'string' }, san: { type: 'string' }, cn: { type: 'string' }, days: { type: 'string' }, force: { type: 'boolean' } })
    if (values.help === true) { out(CERTS_HELP); return }
    expectPositionals(positionals, [])
    const dir = stringFlag(values, 'out')
    if (dir === undefined) throw new UsageError('certs init needs --out DIR')
    const san = stringFlag(values, 'san')
    const cn = stringFlag(values, 'cn')
    const days = intFlag(values, 'days', 1, 3650)
    const r = await initCertificates({
      outDir: resolve(dir),
      ...(san === undefined ? {} : { sans: parseSans(san) }),
      ...(cn === undefined ? {} : { cn }),
      ...(days === undefined ? {} : { days }),
      force: values.force === true
    })
    out(`wrote ${r.caCert}\nwrote ${r.caKey}\nwrote ${r.serverCert}\nwrote ${r.serverKey}\n`)
    return
  }
  if (sub === 'client') {
    const { values, positionals } = parse(rest, { out: { type: 'string' }, days: { type: 'string' }, force: { type: 'boolean' } })
    if (values.help === true) { out(CERTS_HELP); return }
    const [name] = expectPositionals(positionals, ['NAME'])
    const dir = stringFlag(values, 'out')
    if (dir === undefined) throw new UsageError('certs client needs --out DIR (the folder holding ca.crt and ca.key)')
    const days = intFlag(values, 'days', 1, 3650)
    const r = await issueClientCertificate({ name: name as string, dir: resolve(dir), ...(days === undefined ? {} : { days }), force: values.force === true })
    out(`wrote ${r.cert}\nwrote ${r.key}\n`)
    return
  }
  if (sub === 'revoke') {
    const { values, positionals } = parse(rest, { out: { type: 'string' } })
    if (values.help === true) { out(CERTS_HELP); return }
    const [name] = expectPositionals(positionals, ['NAME'])
    const dir = stringFlag(values, 'out')
    if (dir === undefined) throw new UsageError('certs revoke needs --out DIR (the folder holding ca.crt, ca.key and NAME.crt)')
    const r = await revokeCertificate({ name: name as string, dir: resolve(dir) })
    out(`${r.alreadyRevoked ? 'already revoked' : 'revoked'} ${name} (serial ${r.serial}); wrote ${r.crl} (${r.revoked} revoked in all)\n`)
    return
  }
  throw new UsageError(`unknown certs command: ${sub} (expected init, client or revoke)`)
}
