// The PROXY protocol (v1 text, v2 binary: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt)
// in front of a listener. The header is read off the raw TCP socket before any TLS byte, only
// from a trusted proxy, and the client address it carries becomes the socket's remoteAddress,
// so limits, lockout, logs and metrics see the device instead of the proxy.
import { BlockList, isIPv4, isIPv6, SocketAddress, type Socket } from 'node:net'
import { Command, IPv4ProxyAddress, IPv6ProxyAddress, TransportProtocol, V1ProxyProtocol, V2ProxyProtocol } from 'proxy-protocol-js'
import type { ProxyProtocolConfig } from '../config/proxy-protocol.js'
import type { Logger } from '../log.js'
import { createLogGate, type LogGate } from '../log-gate.js'
import type { ListenerLimits } from './listener.js'

/** Why a connection was closed before the broker saw it. */
export type ProxyRefusal = 'untrusted_peer' | 'missing_header' | 'malformed' | 'timeout' | 'unsupported_family'

/** The client a proxy speaks for. */
export interface ProxiedPeer {
  readonly address: string
  readonly port: number
  readonly family: 'IPv4' | 'IPv6'
}

export type HeaderResult =
  | { readonly kind: 'proxied', readonly peer: ProxiedPeer }
  /** v2 LOCAL: the proxy's own connection (a health check); its address stays. */
  | { readonly kind: 'local' }
  | { readonly kind: 'refused', readonly reason: ProxyRefusal }
  /** The peer left (or failed) before a whole header arrived. */
  | { readonly kind: 'closed' }

const V2_SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')
const V1_SIGNATURE = Buffer.from('PROXY ', 'latin1')
// The spec's own bounds: a v1 line is at most 107 bytes with its CRLF; a v2 header with the
// longest address block (UNIX, 216 bytes) fits 232, and 536 leaves room for TLVs (the spec's
// suggested buffer). Anything longer is refused, never buffered.
const V1_MAX = 107
const V2_MAX = 536

type Framed = { readonly version: 1 | 2, readonly header: Buffer, readonly rest: Buffer } | { readonly reason: ProxyRefusal } | undefined

/** Cuts the header off the bytes received so far; undefined while more are needed. */
function frame (buf: Buffer): Framed {
  const n = Math.min(buf.length, V2_SIGNATURE.length)
  if (buf.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) {
    if (buf.length < 16) return undefined
    // Bytes 15-16: the length of what follows the 16-byte preamble (addresses and TLVs).
    const total = 16 + buf.readUInt16BE(14)
    if (total > V2_MAX) return { reason: 'malformed' }
    return buf.length < total ? undefined : { version: 2, header: buf.subarray(0, total), rest: buf.subarray(total) }
  }
  const m = Math.min(buf.length, V1_SIGNATURE.length)
  if (buf.subarray(0, m).equals(V1_SIGNATURE.subarray(0, m))) {
    const end = buf.subarray(0, V1_MAX).indexOf('\r\n')
    if (end === -1) return buf.length >= V1_MAX ? { reason: 'malformed' } : undefined
    return { version: 1, header: buf.subarray(0, end + 2), rest: buf.subarray(end + 2) }
  }
  // A TLS ClientHello, an MQTT CONNECT, a scanner's probe: not from a proxy speaking the protocol.
  return { reason: 'missing_header' }
}

/** The address as Node prints a peer's (`2001:db8::1`, `::ffff:127.0.0.1`); undefined when it is none. */
function normalise (address: string, family: 'IPv4' | 'IPv6'): string | undefined {
  if (family === 'IPv4' ? !isIPv4(address) : (!isIPv6(address) || address.includes('%'))) return undefined
  return new SocketAddress({ address, family: family === 'IPv4' ? 'ipv4' : 'ipv6' }).address
}

function port (n: number): number | undefined {
  return Number.isInteger(n) && n >= 0 && n <= 65535 ? n : undefined
}

function v1 (header: Buffer): HeaderResult {
  const line = header.toString('latin1')
  // "PROXY UNKNOWN": the proxy could not tell who the client is.
  if (/^PROXY UNKNOWN[ \r]/.test(line)) return { kind: 'refused', reason: 'unsupported_family' }
  let parsed: V1ProxyProtocol
  try {
    parsed = V1ProxyProtocol.parse(line)
  } catch {
    return { kind: 'refused', reason: 'malformed' }
  }
  const family = parsed.inetProtocol === 'TCP4' ? 'IPv4' : parsed.inetProtocol === 'TCP6' ? 'IPv6' : undefined
  if (family === undefined) return { kind: 'refused', reason: 'unsupported_family' }
  // The parser takes any word as an address: both must be real ones of the family named.
  const address = normalise(parsed.source.ipAddress, family)
  const srcPort = port(parsed.source.port)
  if (address === undefined || srcPort === undefined || normalise(parsed.destination.ipAddress, family) === undefined || port(parsed.destination.port) === undefined) {
    return { kind: 'refused', reason: 'malformed' }
  }
  return { kind: 'proxied', peer: { address, port: srcPort, family } }
}

function v2 (header: Buffer): HeaderResult {
  let parsed: V2ProxyProtocol
  try {
    parsed = V2ProxyProtocol.parse(header)
  } catch {
    return { kind: 'refused', reason: 'malformed' }
  }
  // LOCAL: the spec says to use the real connection endpoints and ignore any address given.
  if (parsed.command === Command.LOCAL) return { kind: 'local' }
  const a = parsed.proxyAddress
  if (parsed.transportProtocol !== TransportProtocol.STREAM) return { kind: 'refused', reason: 'unsupported_family' }
  if (a instanceof IPv4ProxyAddress) {
    const address = normalise(a.sourceAddress.address.join('.'), 'IPv4')
    return address === undefined ? { kind: 'refused', reason: 'malformed' } : { kind: 'proxied', peer: { address, port: a.sourcePort, family: 'IPv4' } }
  }
  if (a instanceof IPv6ProxyAddress) {
    const b = a.sourceAddress.address
    const groups = Array.from({ length: 8 }, (_, i) => (((b[2 * i] ?? 0) << 8) | (b[2 * i + 1] ?? 0)).toString(16))
    const address = normalise(groups.join(':'), 'IPv6')
    return address === undefined ? { kind: 'refused', reason: 'malformed' } : { kind: 'proxied', peer: { address, port: a.sourcePort, family: 'IPv6' } }
  }
  // UNSPEC or UNIX under PROXY: no network address to hold the client to.
  return { kind: 'refused', reason: 'unsupported_family' }
}

/**
 * Reads a PROXY header from a socket just accepted and calls `done` once, synchronously from
 * the socket's own event: on success the socket is paused with any bytes after the header
 * (the TLS ClientHello, the MQTT CONNECT) put back in front, for whoever reads it next. Never
 * throws on what the peer sends; on refusal or close the caller destroys the socket.
 */
export function readProxyHeader (socket: Socket, timeoutMs: number, done: (result: HeaderResult) => void): void {
  let buf: Buffer = Buffer.alloc(0)
  let finished = false
  const finish = (result: HeaderResult, rest?: Buffer): void => {
    if (finished) return
    finished = true
    clearTimeout(timer)
    socket.off('data', onData)
    socket.off('end', onEnd)
    socket.off('close', onEnd)
    socket.off('error', onEnd)
    socket.pause()
    if (rest !== undefined && rest.length > 0) socket.unshift(rest)
    done(result)
  }
  const onEnd = (): void => { finish({ kind: 'closed' }) }
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk])
    const framed = frame(buf)
    if (framed === undefined) return
    if ('reason' in framed) {
      finish({ kind: 'refused', reason: framed.reason })
      return
    }
    finish(framed.version === 1 ? v1(framed.header) : v2(framed.header), framed.rest)
  }
  const timer = setTimeout(() => { finish({ kind: 'refused', reason: 'timeout' }) }, timeoutMs)
  socket.on('data', onData)
  socket.once('end', onEnd)
  socket.once('close', onEnd)
  socket.on('error', onEnd)
}

// Where a proxied socket keeps its client, for the TLS socket later built on top of it.
const PROXIED = Symbol('bastion.proxiedPeer')

/**
 * Makes `peer` the socket's remoteAddress, remotePort and remoteFamily. Own properties shadow
 * net.Socket's getters, which would otherwise ask the kernel (and cache its answer).
 */
export function applyPeer (socket: Socket, peer: ProxiedPeer): void {
  const fields: Array<[string | symbol, unknown]> = [['remoteAddress', peer.address], ['remotePort', peer.port], ['remoteFamily', peer.family], [PROXIED, peer]]
  for (const [key, value] of fields) Object.defineProperty(socket, key, { value, enumerable: false, configurable: true })
}

/**
 * Copies the client address of a proxied raw socket onto the TLSSocket node:tls built on it: a
 * TLSSocket asks its handle, hence the kernel, for its peer, which is the proxy. Node keeps the
 * wrapped socket as `_parent` (lib/_tls_wrap.js). False when that socket carries no client, so
 * a listener behind a proxy can refuse rather than blame the proxy for its clients.
 */
export function carryPeer (tlsSocket: Socket): boolean {
  const parent = (tlsSocket as unknown as { _parent?: Record<symbol, unknown> })._parent
  const peer = parent?.[PROXIED] as ProxiedPeer | undefined
  if (peer === undefined) return false
  applyPeer(tlsSocket, peer)
  return true
}

export interface ProxyGateOptions {
  /** Normalised CIDRs from config (`proxyProtocol.trusted`). */
  readonly trusted: readonly string[]
  /** Milliseconds a trusted proxy has to send the whole header. */
  readonly timeoutMs: number
  readonly log: Logger
  /** Counts a socket while its header is awaited (the total connection limit); false: refuse. */
  readonly hold?: (socket: Socket) => boolean
  /** Bounds the refusal lines; one per address, reason and minute by default. */
  readonly logGate?: LogGate
}

export interface ProxyGate {
  /** Whether `address` is one of the trusted proxies. */
  trusts (address: string | undefined): boolean
  /**
   * Takes a socket just accepted: `next` gets it once it carries its client's address (a v2
   * LOCAL connection keeps the proxy's). Any other socket is closed here, and logged.
   */
  accept (socket: Socket, next: (socket: Socket) => void): void
}

export function createProxyGate (opts: ProxyGateOptions): ProxyGate {
  const trusted = new BlockList()
  for (const entry of opts.trusted) {
    const [address = '', bits = ''] = entry.split('/')
    trusted.addSubnet(address, Number(bits), isIPv4(address) ? 'ipv4' : 'ipv6')
  }
  const logGate = opts.logGate ?? createLogGate()
  const trusts = (address: string | undefined): boolean => address !== undefined && trusted.check(address, isIPv4(address) ? 'ipv4' : 'ipv6')

  function refused (remote: string | undefined, reason: ProxyRefusal): void {
    const open = logGate.pass(`proxy.refused\u0000${reason}\u0000${remote ?? ''}`)
    if (open === undefined) return
    const entry = { event: 'proxy.refused', remote, reason, ...(open.suppressed > 0 ? { suppressed: open.suppressed } : {}) }
    // Anyone may knock at the port; a trusted proxy that fails the protocol is misconfigured.
    if (reason === 'untrusted_peer') opts.log.info(entry, 'connection refused: not a trusted proxy')
    else opts.log.warn(entry, 'connection from a trusted proxy refused: no valid PROXY protocol header')
  }

  return {
    trusts,
    accept (socket, next) {
      const remote = socket.remoteAddress
      // Nothing is read from anyone else: no header of theirs is parsed, no socket held.
      if (!trusts(remote)) {
        if (remote !== undefined) refused(remote, 'untrusted_peer')
        socket.destroy()
        return
      }
      if (opts.hold !== undefined && !opts.hold(socket)) {
        socket.destroy()
        return
      }
      readProxyHeader(socket, opts.timeoutMs, (result) => {
        if (result.kind === 'refused') refused(remote, result.reason)
        if (result.kind === 'refused' || result.kind === 'closed') {
          socket.destroy()
          return
        }
        if (result.kind === 'proxied') applyPeer(socket, result.peer)
        else {
          // Marked all the same, so the TLS socket built on it knows it passed this gate.
          applyPeer(socket, { address: remote as string, port: socket.remotePort ?? 0, family: socket.remoteFamily === 'IPv6' ? 'IPv6' : 'IPv4' })
          opts.log.debug({ event: 'proxy.local', remote }, 'PROXY LOCAL connection: the proxy speaks for itself')
        }
        next(socket)
      })
    }
  }
}

// Without broker limits (a listener started on its own): the default TLS handshake timeout.
const DEFAULT_HEADER_TIMEOUT = 10_000

/**
 * The gate of a listener with `proxyProtocol` set, undefined without it. A proxy sends its
 * header as it connects; the header gets as long as a TLS handshake (limits.tlsHandshakeTimeout).
 */
export function proxyGateFor (config: ProxyProtocolConfig | undefined, log: Logger, limits?: ListenerLimits): ProxyGate | undefined {
  if (config === undefined) return undefined
  const hold = limits?.hold?.bind(limits)
  return createProxyGate({ trusted: config.trusted, timeoutMs: limits?.tlsHandshakeTimeout ?? DEFAULT_HEADER_TIMEOUT, log, ...(hold === undefined ? {} : { hold }) })
}
