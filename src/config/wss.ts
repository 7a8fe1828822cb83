// The keys a wss listener has beyond the TLS listener's: the upgrade's path and allowed Origins.
import { fail, str, type Raw } from './fields.js'

// RFC 3986 path characters (no query or fragment): compared byte for byte with the request's.
const PATH = /^\/[!$-.0-9:;=@A-Z_a-z~/]{0,255}$/

/** The HTTP path a WebSocket upgrade must ask for; default /mqtt. */
export function wsPath (raw: Raw, path: string): string {
  const v = str(raw, 'path', path, '/mqtt')
  if (!PATH.test(v)) fail(path, `"${v}" is not a URL path (starts with /, no query, no spaces, at most 256 characters)`)
  return v
}

/**
 * Browser Origins allowed to open a connection, each exactly as a browser sends it (RFC 6454
 * serialisation: scheme://host[:port], lower case, no default port, no path), because the
 * header is compared as a string.
 */
export function origins (raw: Raw, path: string): readonly string[] {
  const list = raw.origins ?? []
  if (!Array.isArray(list)) fail(path, 'must be a list of origins like https://app.example.com')
  return Object.freeze(list.map((entry: unknown, i) => {
    const key = `${path}[${i}]`
    if (typeof entry !== 'string' || entry.length === 0) fail(key, 'must be an origin like https://app.example.com')
    let u: URL | undefined
    try {
      u = new URL(entry)
    } catch {}
    if (u === undefined || (u.protocol !== 'https:' && u.protocol !== 'http:')) fail(key, `"${entry}" is not an origin: expected http(s)://host[:port]`)
    if (u.origin !== entry) fail(key, `"${entry}" is not an origin as browsers send it (scheme://host[:port], no path, no trailing /): write ${u.origin}`)
    return entry
  }))
}
