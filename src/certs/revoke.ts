/**
 * Certificate revocation for the private CA: `certs revoke NAME` adds NAME.crt's serial to
 * DIR/crl.pem (a CRL signed by the CA). A TLS listener given that file as `crl` refuses the
 * revoked certificate during the handshake.
 */
import { readFile, rename, stat } from 'node:fs/promises'
import { join } from 'node:path'
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { BastionError } from '../errors.js'
import { fail, loadCa, writePublic } from './issue.js'

const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/

export interface RevokeResult { crl: string; serial: string; alreadyRevoked: boolean; revoked: number }

async function readRevoked (file: string, ca: x509.X509Certificate): Promise<x509.X509CrlEntryParams[]> {
  const exists = await stat(file).then(() => true, () => false)
  if (!exists) return []
  let crl: x509.X509Crl
  try {
    crl = new x509.X509Crl(await readFile(file, 'utf8'))
  } catch (err) {
    return fail(`${file} is not a PEM certificate revocation list`, err)
  }
  // A CRL from another CA would be silently replaced by ours, losing its entries: refuse.
  if (!await crl.verify({ publicKey: await ca.publicKey.export() })) fail(`${file} was not signed by this CA`)
  return crl.entries.map((e) => ({ serialNumber: e.serialNumber, revocationDate: e.revocationDate, ...(e.reason === undefined ? {} : { reason: e.reason }) }))
}

/** Writes DIR/crl.pem: the CA's list of revoked certificates, NAME's certificate added. */
export async function revokeCertificate (opts: { name: string; dir: string }): Promise<RevokeResult> {
  if (!NAME_RE.test(opts.name)) {
    throw new BastionError('BASTION_ERR_INVALID_USERNAME', `invalid client name "${opts.name}": use 1 to 64 of A-Z a-z 0-9 _ . -`)
  }
  const { ca, caKey } = await loadCa(opts.dir)
  const certPath = join(opts.dir, `${opts.name}.crt`)
  let cert: x509.X509Certificate
  try {
    cert = new x509.X509Certificate(await readFile(certPath, 'utf8'))
  } catch (err) {
    return fail(`cannot read the certificate to revoke, ${certPath}`, err)
  }
  if (!await cert.verify({ publicKey: ca, signatureOnly: true })) fail(`${certPath} was not issued by ${join(opts.dir, 'ca.crt')}`)

  const crlPath = join(opts.dir, 'crl.pem')
  const entries = await readRevoked(crlPath, ca)
  const serial = cert.serialNumber
  const alreadyRevoked = entries.some((e) => e.serialNumber.toLowerCase() === serial.toLowerCase())
  if (!alreadyRevoked) entries.push({ serialNumber: serial, revocationDate: new Date(), reason: x509.X509CrlReason.unspecified })
  const caKeyId = ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId
  const crl = await x509.X509CrlGenerator.create({
    issuer: ca.subjectName.toString(),
    thisUpdate: new Date(),
    // OpenSSL rejects every handshake once a CRL is past nextUpdate: let it live as long as the CA.
    nextUpdate: ca.notAfter,
    entries,
    signingKey: caKey,
    signingAlgorithm: SIGNING,
    extensions: caKeyId === undefined ? [] : [new x509.AuthorityKeyIdentifierExtension(caKeyId)]
  })
  // Write beside and rename, so a broker reading the CRL never sees half a file.
  const tmp = `${crlPath}.${process.pid}.tmp`
  // OpenSSL (and so Node and Mosquitto) only reads the "X509 CRL" PEM label, not "CRL".
  await writePublic(tmp, x509.PemConverter.encode(crl.rawData, 'X509 CRL'), true)
  await rename(tmp, crlPath)
  return { crl: crlPath, serial, alreadyRevoked, revoked: entries.length }
}
