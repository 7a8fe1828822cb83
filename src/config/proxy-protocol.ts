// The `proxyProtocol` key of a tls or tcp listener: which peers may speak for others.
import { isIP, SocketAddress } from 'node:net'
import { fail, object } from './fields.js'

export interface ProxyProtocolConfig {
  /**
   * The proxies whose PROXY header is believed, as normalised CIDRs (`127.0.0.1/32`,
   * `10.0.0.0/8`, `::1/128`). The listener serves nobody else.
   */
  readonly trusted: readonly string[]
}

// Far more proxies than any deployment has; bounds what one config line can make us hold.
const MAX_TRUSTED = 1024

function cidr (entry: unknown, path: string): string {
  if (typeof entry !== 'string') fail(path, 'must be a proxy address or CIDR, e.g. 10.0.0.5 or 10.0.0.0/8')
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(entry.trim())
  const address = m?.[1] ?? ''
  const family = address.includes('%') ? 0 : isIP(address)
  if (m === null || family === 0) fail(path, `"${entry}" is not an IP address or CIDR (zone ids are not allowed)`)
  const bits = family === 4 ? 32 : 128
  const prefix = m[2] === undefined ? bits : Number(m[2])
  if (prefix > bits) fail(path, `"${entry}": an IPv${family} prefix is at most /${bits}`)
  // Whoever is trusted may claim any address, so any lockout or limit could be dodged.
  if (prefix === 0) fail(path, `"${entry}" trusts every address, and anyone could then claim to be anyone: list your proxies' addresses`)
  const normal = new SocketAddress({ address, family: family === 4 ? 'ipv4' : 'ipv6' }).address
  if (prefix === bits && (normal === '0.0.0.0' || normal === '::')) fail(path, `"${entry}" is the unspecified address, which is never a peer: list your proxies' addresses`)
  return `${normal}/${prefix}`
}

/** undefined without the key (the listener serves peers directly, as before). */
export function parseProxyProtocol (value: unknown, path: string): ProxyProtocolConfig | undefined {
  if (value === undefined) return undefined
  if (value === null) fail(path, 'must be a mapping with trusted: [proxy addresses or CIDRs]')
  const raw = object(value, path, ['trusted'])
  const list = raw.trusted
  if (!Array.isArray(list) || list.length === 0) fail(`${path}.trusted`, 'must be a non-empty list of proxy addresses or CIDRs, e.g. [127.0.0.1, 10.0.0.0/8]')
  if (list.length > MAX_TRUSTED) fail(`${path}.trusted`, `lists ${list.length} entries; at most ${MAX_TRUSTED} (use CIDRs)`)
  return Object.freeze({ trusted: Object.freeze(list.map((entry: unknown, i) => cidr(entry, `${path}.trusted[${i}]`))) })
}
