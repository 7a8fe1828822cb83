// The PROXY header reader and the trusted-proxy gate over real sockets on 127.0.0.1: headers
// built by proxy-protocol-js (v1, v2, IPv4, IPv6), split across TCP writes, followed by the
// client's own bytes; hostile and broken headers; slow and header-less floods.
import t from 'tap'
import { connect, createServer, type Server, type Socket } from 'node:net'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import {
  Command, INETProtocol, IPv4Address, IPv4ProxyAddress, IPv6Address, IPv6ProxyAddress, Peer,
  TransportProtocol, UnixAddress, UnixProxyAddress, UnspecProxyAddress, V1ProxyProtocol, V2ProxyProtocol
} from 'proxy-protocol-js'
import { createConnectionLimiter } from '../../src/limits/connections.js'
import type { Logger } from '../../src/log.js'
import { createProxyGate, readProxyHeader, type HeaderResult } from '../../src/listeners/proxy-protocol.js'

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

const v1 = (line: string): Buffer => Buffer.from(line, 'latin1')
const v4 = (src: number[], port = 51000): Buffer => Buffer.from(new V2ProxyProtocol(Command.PROXY, TransportProtocol.STREAM,
  new IPv4ProxyAddress(IPv4Address.createFrom(src), port, IPv4Address.createFrom([192, 0, 2, 1]), 8883)).build())
const v6 = (src: number[], port = 51000): Buffer => Buffer.from(new V2ProxyProtocol(Command.PROXY, TransportProtocol.STREAM,
  new IPv6ProxyAddress(IPv6Address.createFrom(src), port, IPv6Address.createFrom([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]), 8883)).build())
/** 2001:db8::7 */
const DOC6 = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]

interface Served { port: number; server: Server; sockets: Socket[] }

async function serve (onSocket: (socket: Socket) => void): Promise<Served> {
  const sockets: Socket[] = []
  const server = createServer((s) => { sockets.push(s); onSocket(s) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as { port: number }).port, server, sockets }
}

async function stop (s: Served): Promise<void> {
  for (const socket of s.sockets) socket.destroy()
  await new Promise<void>((resolve) => s.server.close(() => resolve()))
}

interface Outcome { result: HeaderResult; rest: string; remote?: string }

/**
 * Sends `chunks` as separate TCP writes (20 ms apart) and then ends; resolves with what the
 * reader made of them and, when it accepted a header, every byte the socket yielded after it.
 */
async function exchange (chunks: Buffer[], opts: { timeoutMs?: number; end?: boolean } = {}): Promise<Outcome> {
  let settle: (o: Outcome) => void = () => {}
  const outcome = new Promise<Outcome>((resolve) => { settle = resolve })
  const s = await serve((socket) => {
    readProxyHeader(socket, opts.timeoutMs ?? 2000, (result) => {
      if (result.kind !== 'proxied' && result.kind !== 'local') {
        socket.destroy()
        settle({ result, rest: '' })
        return
      }
      // Read the way aedes does: 'readable' and read() on the paused socket.
      let rest = ''
      socket.on('readable', () => { for (let c = socket.read() as Buffer | null; c !== null; c = socket.read() as Buffer | null) rest += c.toString('latin1') })
      socket.on('end', () => { settle({ result, rest }) })
    })
  })
  const client = connect({ port: s.port, host: '127.0.0.1', noDelay: true })
  client.on('error', () => {})
  await new Promise((resolve) => client.once('connect', resolve))
  for (const c of chunks) {
    if (client.destroyed) break
    client.write(c)
    await sleep(20)
  }
  if (opts.end !== false) client.end()
  const timer = setTimeout(() => settle({ result: { kind: 'closed' }, rest: 'NO OUTCOME' }), 5000)
  const o = await outcome
  clearTimeout(timer)
  client.destroy()
  await stop(s)
  return o
}

t.test('v1 TCP4: the client address and port; the bytes after the line are kept', async (t) => {
  const header = v1(new V1ProxyProtocol(INETProtocol.TCP4, new Peer('203.0.113.7', 51000), new Peer('192.0.2.1', 8883)).build())
  const o = await exchange([Buffer.concat([header, Buffer.from('\x10MQTT-CONNECT')])])
  t.same(o.result, { kind: 'proxied', peer: { address: '203.0.113.7', port: 51000, family: 'IPv4' } })
  t.equal(o.rest, '\x10MQTT-CONNECT')
})

t.test('v1 TCP6: the address is written as Node writes a peer address', async (t) => {
  const o = await exchange([v1('PROXY TCP6 2001:DB8:0:0::7 2001:db8::2 40000 8883\r\nafter')])
  t.same(o.result, { kind: 'proxied', peer: { address: '2001:db8::7', port: 40000, family: 'IPv6' } })
  t.equal(o.rest, 'after')
})

t.test('v2 IPv4 and IPv6, from the library that builds them', async (t) => {
  const a = await exchange([Buffer.concat([v4([203, 0, 113, 7], 1234), Buffer.from('tail')])])
  t.same(a.result, { kind: 'proxied', peer: { address: '203.0.113.7', port: 1234, family: 'IPv4' } })
  t.equal(a.rest, 'tail')
  const b = await exchange([v6(DOC6, 65535)])
  t.same(b.result, { kind: 'proxied', peer: { address: '2001:db8::7', port: 65535, family: 'IPv6' } })
  t.equal(b.rest, '')
  const mapped = await exchange([v6([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 9])])
  t.match(mapped.result, { kind: 'proxied', peer: { address: '::ffff:203.0.113.9' } }, 'an IPv4-mapped address reads as Node reads one')
})

t.test('a header split over many TCP writes, with the client bytes in the last one', async (t) => {
  const whole = Buffer.concat([v4([198, 51, 100, 20]), Buffer.from('\x16\x03\x01ClientHello')])
  const cuts = [1, 5, 12, 13, 15, 16, 22, whole.length]
  const chunks = cuts.map((end, i) => whole.subarray(i === 0 ? 0 : cuts[i - 1], end))
  const o = await exchange(chunks)
  t.match(o.result, { kind: 'proxied', peer: { address: '198.51.100.20' } })
  t.equal(o.rest, '\x16\x03\x01ClientHello')
  const line = v1('PROXY TCP4 198.51.100.21 192.0.2.1 7 8883\r\nrest')
  const p = await exchange([line.subarray(0, 3), line.subarray(3, 20), line.subarray(20, line.length - 6), line.subarray(line.length - 6)])
  t.match(p.result, { kind: 'proxied', peer: { address: '198.51.100.21', port: 7 } })
  t.equal(p.rest, 'rest')
})

t.test('v2 TLVs after the addresses are skipped, not handed on as client bytes', async (t) => {
  const h = v4([203, 0, 113, 7])
  const tlv = Buffer.from([0x04, 0x00, 0x03, 0x61, 0x62, 0x63]) // PP2_TYPE_NOOP, 3 bytes
  h.writeUInt16BE(h.readUInt16BE(14) + tlv.length, 14)
  const o = await exchange([Buffer.concat([h, tlv, Buffer.from('client')])])
  t.match(o.result, { kind: 'proxied', peer: { address: '203.0.113.7' } })
  t.equal(o.rest, 'client')
})

t.test('v2 LOCAL (a health check) is the proxy speaking for itself', async (t) => {
  const local = Buffer.from(new V2ProxyProtocol(Command.LOCAL, TransportProtocol.UNSPEC, new UnspecProxyAddress()).build())
  const o = await exchange([Buffer.concat([local, Buffer.from('x')])])
  t.same(o.result, { kind: 'local' })
  t.equal(o.rest, 'x')
})

t.test('a family with no client address to hold is refused: UNKNOWN, UNSPEC, UNIX, UDP', async (t) => {
  const unspec = Buffer.from(new V2ProxyProtocol(Command.PROXY, TransportProtocol.UNSPEC, new UnspecProxyAddress()).build())
  const unix = Buffer.from(new V2ProxyProtocol(Command.PROXY, TransportProtocol.STREAM,
    new UnixProxyAddress(UnixAddress.createFrom([47, 116, 109, 112]), UnixAddress.createFrom([47, 116, 109, 112]))).build())
  const dgram = Buffer.from(new V2ProxyProtocol(Command.PROXY, TransportProtocol.DGRAM,
    new IPv4ProxyAddress(IPv4Address.createFrom([203, 0, 113, 7]), 1, IPv4Address.createFrom([192, 0, 2, 1]), 2)).build())
  for (const [name, bytes] of [['v1 UNKNOWN', v1('PROXY UNKNOWN\r\n')], ['v1 UNKNOWN with addresses', v1('PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n')],
    ['v2 UNSPEC', unspec], ['v2 UNIX', unix], ['v2 DGRAM', dgram]] as const) {
    t.same((await exchange([bytes])).result, { kind: 'refused', reason: 'unsupported_family' }, name)
  }
})

t.test('hostile or broken headers are refused as malformed, never thrown on', async (t) => {
  const badVersion = v4([203, 0, 113, 7])
  badVersion[12] = 0x11
  const badCommand = v4([203, 0, 113, 7])
  badCommand[12] = 0x2f
  const badFamily = v4([203, 0, 113, 7])
  badFamily[13] = 0x41
  const short = v4([203, 0, 113, 7])
  short.writeUInt16BE(4, 14) // shorter than an IPv4 address block
  const huge = v4([203, 0, 113, 7]).subarray(0, 16)
  huge.writeUInt16BE(0xffff, 14)
  const cases: Array<[string, Buffer]> = [
    ['v1 words for addresses', v1('PROXY TCP4 __proto__ constructor 1 2\r\n')],
    ['v1 prototype junk in the family', v1('PROXY __proto__ 1.2.3.4 5.6.7.8 1 2\r\n')],
    ['v1 a port past 65535', v1('PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n')],
    ['v1 an IPv4 address under TCP6', v1('PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n')],
    ['v1 an IPv4 address with a leading zero', v1('PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n')],
    ['v1 a zone id', v1('PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n')],
    ['v1 no CRLF within 107 bytes', v1('PROXY TCP4 ' + '1'.repeat(200))],
    ['v1 double spaces', v1('PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n')],
    ['v2 version 1', badVersion],
    ['v2 command 0xF', badCommand],
    ['v2 family 0x4', badFamily],
    ['v2 length shorter than its addresses', short],
    ['v2 length past the cap', huge]
  ]
  for (const [name, bytes] of cases) t.same((await exchange([bytes])).result, { kind: 'refused', reason: 'malformed' }, name)
})

t.test('anything that does not open with a PROXY signature is a missing header', async (t) => {
  for (const [name, bytes] of [['a TLS ClientHello', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])], ['an MQTT CONNECT', Buffer.from([0x10, 0x0c, 0x00, 0x04])],
    ['HTTP', Buffer.from('GET / HTTP/1.1\r\n\r\n')], ['PROXY without its space', Buffer.from('PROXYTCP4 1.2.3.4\r\n')], ['one NUL', Buffer.from([0])]] as const) {
    t.same((await exchange([bytes])).result, { kind: 'refused', reason: 'missing_header' }, name)
  }
})

t.test('a header that stalls half way times out; a peer that leaves is just closed', async (t) => {
  const started = Date.now()
  const o = await exchange([v1('PROXY TCP4 1.2')], { timeoutMs: 300, end: false })
  t.same(o.result, { kind: 'refused', reason: 'timeout' })
  const took = Date.now() - started
  t.ok(took >= 280 && took < 3000, `refused after the timeout (${took} ms)`)
  t.same((await exchange([v4([1, 2, 3, 4]).subarray(0, 10)])).result, { kind: 'closed' }, 'half a v2 header, then FIN')
  t.same((await exchange([])).result, { kind: 'closed' }, 'no byte at all (a TCP health check)')
})

function logger (): { lines: Array<Record<string, any>>; log: Logger } {
  const lines: Array<Record<string, any>> = []
  const log: Logger = pino({ level: 'debug' }, new Writable({ write (chunk: Buffer, _e, cb) { lines.push(JSON.parse(chunk.toString())); cb() } }))
  return { lines, log }
}

const nullReport = { hit () {} } as unknown as Parameters<typeof createConnectionLimiter>[1]

/** A client socket from `localAddress`; resolves once it is closed (true) or after `ms` still open (false). */
async function closedWithin (port: number, localAddress: string, bytes: Buffer | undefined, ms: number): Promise<boolean> {
  const c = connect({ port, host: '127.0.0.1', localAddress })
  c.on('error', () => {})
  if (bytes !== undefined) c.write(bytes)
  c.resume()
  return await new Promise((resolve) => {
    const timer = setTimeout(() => { c.destroy(); resolve(false) }, ms)
    c.once('close', () => { clearTimeout(timer); resolve(true) })
  })
}

t.test('the gate: the client address becomes remoteAddress; untrusted peers are closed unread; refusals logged once per minute', async (t) => {
  const { lines, log } = logger()
  const gate = createProxyGate({ trusted: ['127.0.0.1/32'], timeoutMs: 2000, log })
  const handed: Array<{ address?: string; port?: number; family?: string }> = []
  const s = await serve((socket) => gate.accept(socket, (sock) => {
    handed.push({ address: sock.remoteAddress, port: sock.remotePort, family: sock.remoteFamily })
    sock.end()
  }))
  t.teardown(() => stop(s))
  t.ok(gate.trusts('127.0.0.1') && gate.trusts('::ffff:127.0.0.1'), 'an IPv4-mapped peer is the same proxy')
  t.notOk(gate.trusts('127.0.0.2') || gate.trusts(undefined))

  t.ok(await closedWithin(s.port, '127.0.0.1', v4([203, 0, 113, 7], 4242), 3000))
  t.same(handed, [{ address: '203.0.113.7', port: 4242, family: 'IPv4' }])

  for (let i = 0; i < 3; i++) t.ok(await closedWithin(s.port, '127.0.0.2', v4([203, 0, 113, 8]), 3000), 'an untrusted peer claiming an address is closed')
  t.ok(await closedWithin(s.port, '127.0.0.2', undefined, 3000), 'an untrusted peer sending nothing is closed at once')
  t.ok(await closedWithin(s.port, '127.0.0.1', Buffer.from([0x16, 0x03, 0x01, 0, 1]), 3000), 'the proxy itself without a header is closed')
  t.equal(handed.length, 1, 'none of them reached the broker')
  await sleep(50)
  const refused = lines.filter((l) => l.event === 'proxy.refused')
  t.match(refused, [
    { level: 30, remote: '127.0.0.2', reason: 'untrusted_peer' },
    { level: 40, remote: '127.0.0.1', reason: 'missing_header' }
  ], 'one line per address and reason within the minute')
  t.equal(refused.length, 2)
})

t.test('a flood of slow header-less connections holds at most maxConnections sockets, each for the timeout only', async (t) => {
  const limiter = createConnectionLimiter({ maxConnections: 5, maxConnectionsPerIp: 0 }, nullReport)
  const { log } = logger()
  const gate = createProxyGate({ trusted: ['127.0.0.0/8'], timeoutMs: 400, log, hold: (socket) => limiter.hold(socket) })
  let reached = 0
  const s = await serve((socket) => gate.accept(socket, () => { reached++ }))
  t.teardown(() => stop(s))
  const started = Date.now()
  const results = Promise.all(Array.from({ length: 20 }, async () => await closedWithin(s.port, '127.0.0.1', Buffer.from('PROX'), 5000)))
  let peak = 0
  for (let i = 0; i < 40 && Date.now() - started < 3000; i++) {
    peak = Math.max(peak, limiter.open())
    await sleep(10)
  }
  const closed = await results
  t.ok(closed.every(Boolean), 'every socket was closed by the broker')
  t.ok(peak > 0 && peak <= 5, `at most 5 held at once (peak ${peak})`)
  t.ok(Date.now() - started < 3000, 'the held ones within their timeout')
  await sleep(50)
  t.equal(limiter.open(), 0, 'nothing is counted afterwards')
  t.equal(reached, 0)
})

t.test('a held socket admitted under its client address is counted once in the total', async (t) => {
  const limiter = createConnectionLimiter({ maxConnections: 10, maxConnectionsPerIp: 1 }, nullReport)
  const { log } = logger()
  const gate = createProxyGate({ trusted: ['127.0.0.1/32'], timeoutMs: 2000, log, hold: (socket) => limiter.hold(socket) })
  const admitted: boolean[] = []
  const s = await serve((socket) => gate.accept(socket, (sock) => { admitted.push(limiter.admit(sock)) }))
  t.teardown(() => stop(s))
  const clients = [v4([203, 0, 113, 7]), v4([203, 0, 113, 8]), v4([203, 0, 113, 7])].map((h) => {
    const c = connect({ port: s.port, host: '127.0.0.1' })
    c.on('error', () => {})
    c.write(h)
    return c
  })
  for (let i = 0; i < 100 && admitted.length < 3; i++) await sleep(20)
  t.same(admitted, [true, true, false], 'the per-address limit applies to the client, not to the proxy')
  t.equal(limiter.open('203.0.113.7'), 1)
  t.equal(limiter.open('127.0.0.1'), 0, 'the proxy address is not counted per address')
  t.equal(limiter.open(), 3, 'each socket once in the total, until it closes')
  for (const c of clients) c.destroy()
  for (let i = 0; i < 50 && limiter.open() > 0; i++) await sleep(20)
  for (const socket of s.sockets) socket.destroy()
  for (let i = 0; i < 50 && limiter.open() > 0; i++) await sleep(20)
  t.equal(limiter.open(), 0)
})
