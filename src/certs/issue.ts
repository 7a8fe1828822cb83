/**
 * Issues a private development CA, a server certificate and client certificates.
 *
 * Every key is ECDSA P-256 signed with SHA-256: a key pair takes well under a millisecond to
 * generate (RSA-3072 takes seconds), every MQTT stack we care about accepts it (OpenSSL,
 * mosquitto, paho, mqtt.js, Node's tls) and it gives 128-bit security, the same as RSA-3072.
 * Because the keys are EC, end-entity certificates carry KeyUsage digitalSignature only:
 * keyEncipherment describes RSA key transport, which an EC key cannot do.
 */
import { X509Certificate as NodeX509Certificate, randomBytes, webcrypto } from 'node:crypto'
import { lstat, mkdir, open, readFile } from 'node:fs/promises'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { join, resolve } from 'node:path'
// @peculiar/x509 resolves its ASN.1 codecs through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { BastionError } from '../errors.js'

// @peculiar/x509 signs through a global WebCrypto provider; Node's is complete, so use it.
x509.cryptoProvider.set(webcrypto as unknown as Crypto)

const EC_KEY = { name: 'ECDSA', namedCurve: 'P-256' } as const
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const
const CA_SUBJECT = 'mqtt-bastion development CA'
const CA_DAYS = 3650
const SERVER_DAYS = 825 // the longest lifetime Apple's TLS clients accept for a server certificate
const DAY_MS = 86_400_000
const CLOCK_SKEW_MS = 5 * 60_000 // a client whose clock runs a little behind must not see "not yet valid"
const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/
const LABEL = '[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
const HOSTNAME_RE = new RegExp(`^(?:\\*\\.)?${LABEL}(?:\\.${LABEL})*$`)

export interface SanEntry { type: 'dns' | 'ip'; value: string }

export function parseSans (text: string): SanEntry[] {
  const out: SanEntry[] = []
  for (const raw of text.split(',')) {
    const entry = raw.trim()
    if (entry === '') continue // tolerate "a,b," from shell-built lists
    const colon = entry.indexOf(':')
    const prefix = colon < 0 ? '' : entry.slice(0, colon).trim().toLowerCase()
    const value = colon < 0 ? '' : entry.slice(colon + 1).trim()
    if ((prefix !== 'dns' && prefix !== 'ip') || value === '') {
      throw new BastionError('BASTION_ERR_INVALID_INPUT', `invalid --san entry "${entry}": expected DNS:name or IP:address`)
    }
    if (prefix === 'ip') {
      // a zone id ("%eth0") is local to one host and has no encoding in a certificate
      if (isIP(value) === 0 || value.includes('%')) {
        throw new BastionError('BASTION_ERR_INVALID_INPUT', `invalid --san entry "${entry}": "${value}" is not an IPv4 or IPv6 address`)
      }
    } else if (value.length > 253 || !HOSTNAME_RE.test(value)) {
      throw new BastionError('BASTION_ERR_INVALID_INPUT', `invalid --san entry "${entry}": "${value}" is not a valid DNS name`)
    }
    out.push({ type: prefix, value })
  }
  if (out.length === 0) throw new BastionError('BASTION_ERR_INVALID_INPUT', 'invalid --san: expected at least one DNS:name or IP:address')
  return out
}

export interface CertInitOptions { outDir: string; sans?: SanEntry[]; cn?: string; days?: number; force?: boolean }
export interface CertInitResult { caCert: string; caKey: string; serverCert: string; serverKey: string }

export async function initCertificates (opts: CertInitOptions): Promise<CertInitResult> {
  const dir = resolve(opts.outDir)
  const days = checkDays(opts.days ?? SERVER_DAYS)
  const cn = opts.cn ?? 'localhost'
  if (cn.trim() === '' || cn.length > 64) throw new BastionError('BASTION_ERR_INVALID_INPUT', `invalid --cn "${cn}": expected 1 to 64 characters`)
  const sans = opts.sans ?? [{ type: 'dns', value: 'localhost' }, { type: 'ip', value: '127.0.0.1' }]
  const force = opts.force === true
  const result: CertInitResult = {
    caCert: join(dir, 'ca.crt'),
    caKey: join(dir, 'ca.key'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key')
  }
  await mkdir(dir, { recursive: true, mode: 0o700 }).catch((err: unknown) => fail(`cannot create ${dir}`, err))
  // check all four first so a refusal never leaves a CA without its server certificate
  if (!force) for (const file of Object.values(result)) await refuseExisting(file)

  const now = Date.now()
  const caKeys = await generateKeys()
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: [{ CN: [CA_SUBJECT] }],
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter: new Date(now + CA_DAYS * DAY_MS),
    keys: caKeys,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(caKeys.publicKey)
    ]
  })
  const server = await issueLeaf(ca, caKeys.privateKey, cn, days, x509.ExtendedKeyUsage.serverAuth,
    [new x509.SubjectAlternativeNameExtension(sans.map((s) => ({ type: s.type, value: s.value })))])

  await writeSecret(result.caKey, await keyPem(caKeys.privateKey), force)
  await writePublic(result.caCert, ca.toString('pem'), force)
  await writeSecret(result.serverKey, await keyPem(server.privateKey), force)
  await writePublic(result.serverCert, server.cert.toString('pem'), force)
  return result
}

export interface ClientCertOptions { name: string; dir: string; outDir?: string; days?: number; force?: boolean }

export async function issueClientCertificate (opts: ClientCertOptions): Promise<{ cert: string; key: string }> {
  if (!NAME_RE.test(opts.name)) {
    throw new BastionError('BASTION_ERR_INVALID_USERNAME', `invalid client name "${opts.name}": use 1 to 64 of A-Z a-z 0-9 _ . -`)
  }
  const days = checkDays(opts.days ?? SERVER_DAYS)
  const dir = resolve(opts.dir)
  const outDir = resolve(opts.outDir ?? dir)
  const force = opts.force === true
  const cert = join(outDir, `${opts.name}.crt`)
  const key = join(outDir, `${opts.name}.key`)

  const { ca, caKey, caCertPath, caKeyPath } = await loadCa(dir)
  await mkdir(outDir, { recursive: true, mode: 0o700 }).catch((err: unknown) => fail(`cannot create ${outDir}`, err))
  if (!force) { await refuseExisting(cert); await refuseExisting(key) }
  const client = await issueLeaf(ca, caKey, opts.name, days, x509.ExtendedKeyUsage.clientAuth, [])
  // a ca.key that does not belong to ca.crt would yield certificates nobody can verify
  if (!await client.cert.verify({ publicKey: ca, signatureOnly: true })) fail(`${caKeyPath} does not belong to ${caCertPath}`)
  await writeSecret(key, await keyPem(client.privateKey), force)
  await writePublic(cert, client.cert.toString('pem'), force)
  return { cert, key }
}

/** Reads DIR/ca.crt and DIR/ca.key (the CA that signs client certificates and the CRL). */
export async function loadCa (dir: string): Promise<{ ca: x509.X509Certificate; caKey: CryptoKey; caCertPath: string; caKeyPath: string }> {
  const caCertPath = join(dir, 'ca.crt')
  const caKeyPath = join(dir, 'ca.key')
  const caPem = await readCaFile(caCertPath)
  const caKeyText = await readCaFile(caKeyPath)
  let ca: x509.X509Certificate
  let caKey: CryptoKey
  try {
    ca = new x509.X509Certificate(caPem)
  } catch (err) {
    return fail(`${caCertPath} is not a PEM certificate`, err)
  }
  try {
    const der = x509.PemConverter.decodeFirst(caKeyText)
    caKey = await webcrypto.subtle.importKey('pkcs8', der, EC_KEY, false, ['sign']) as CryptoKey
  } catch (err) {
    return fail(`${caKeyPath} is not a PKCS#8 ECDSA P-256 private key`, err)
  }
  if (ca.notAfter.getTime() <= Date.now()) fail(`the CA in ${caCertPath} expired on ${ca.notAfter.toISOString()}`)
  return { ca, caKey, caCertPath, caKeyPath }
}

export function certificateExpiry (pemPath: string): Date {
  let cert: NodeX509Certificate
  try {
    cert = new NodeX509Certificate(readFileSync(pemPath))
  } catch (err) {
    return fail(`cannot read certificate ${pemPath}`, err)
  }
  const expiry = new Date(cert.validTo)
  if (Number.isNaN(expiry.getTime())) fail(`cannot parse the expiry date "${cert.validTo}" of ${pemPath}`)
  return expiry
}

async function issueLeaf (ca: x509.X509Certificate, caKey: CryptoKey, cn: string, days: number,
  usage: x509.ExtendedKeyUsage, extra: x509.Extension[]): Promise<{ cert: x509.X509Certificate; privateKey: CryptoKey }> {
  const keys = await generateKeys()
  const now = Date.now()
  // a certificate outliving its issuer fails validation anyway; stop where the CA stops
  const notAfter = new Date(Math.min(now + days * DAY_MS, ca.notAfter.getTime()))
  const caKeyId = ca.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: [{ CN: [cn] }],
    issuer: ca.subjectName,
    notBefore: new Date(now - CLOCK_SKEW_MS),
    notAfter,
    publicKey: keys.publicKey,
    signingKey: caKey,
    signingAlgorithm: SIGNING,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([usage]),
      ...extra,
      caKeyId === undefined ? await x509.AuthorityKeyIdentifierExtension.create(ca) : new x509.AuthorityKeyIdentifierExtension(caKeyId),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)
    ]
  })
  return { cert, privateKey: keys.privateKey }
}

async function generateKeys (): Promise<CryptoKeyPair> {
  return await webcrypto.subtle.generateKey(EC_KEY, true, ['sign', 'verify']) as CryptoKeyPair
}

/** 16 random bytes with the top bit clear (DER INTEGERs are signed) and a non-zero first byte (no padding). */
function serial (): string {
  const bytes = randomBytes(16)
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) || 0x01
  return bytes.toString('hex')
}

async function keyPem (key: CryptoKey): Promise<string> {
  const der = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', key))
  const lines = der.toString('base64').match(/.{1,64}/g) ?? []
  return `-----BEGIN PRIVATE KEY-----\n${lines.join('\n')}\n-----END PRIVATE KEY-----\n`
}

function checkDays (days: number): number {
  if (!Number.isInteger(days) || days < 1 || days > CA_DAYS) {
    throw new BastionError('BASTION_ERR_INVALID_INPUT', `invalid --days ${days}: expected a whole number from 1 to ${CA_DAYS}`)
  }
  return days
}

async function refuseExisting (file: string): Promise<void> {
  // lstat so that a dangling symlink also counts: writing through it would land somewhere unexpected
  const exists = await lstat(file).then(() => true, () => false)
  if (exists) fail(`refusing to overwrite ${file}: it already exists (pass --force to replace it)`)
}

async function readCaFile (file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      fail(`missing ${file}: run \`mqtt-bastion certs init --out DIR\` first to create the CA`)
    }
    return fail(`cannot read ${file}`, err)
  }
}

const writeSecret = async (file: string, data: string, force: boolean): Promise<void> => await writeMode(file, data, 0o600, force)
export const writePublic = async (file: string, data: string, force: boolean): Promise<void> => await writeMode(file, data, 0o644, force)

async function writeMode (file: string, data: string, mode: number, force: boolean): Promise<void> {
  try {
    // 'wx' closes the race between refuseExisting and here; chmod before writing, because
    // the open mode is filtered by umask and an overwritten file keeps its old mode
    const fh = await open(file, force ? 'w' : 'wx', mode)
    try {
      await fh.chmod(mode)
      // A PEM file ends with a newline: `cat server.crt server.key > haproxy.pem` (or a chain
      // file) must not glue END and BEGIN lines together, which OpenSSL then refuses.
      await fh.writeFile(data.endsWith('\n') ? data : `${data}\n`)
    } finally {
      await fh.close()
    }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') fail(`refusing to overwrite ${file}: it already exists (pass --force to replace it)`)
    fail(`cannot write ${file}`, err)
  }
}

export function fail (message: string, cause?: unknown): never {
  const detail = cause === undefined ? '' : `: ${(cause as NodeJS.ErrnoException).code ?? (cause as Error).message ?? String(cause)}`
  throw new BastionError('BASTION_ERR_CERTS', message + detail, cause === undefined ? undefined : { cause })
}
