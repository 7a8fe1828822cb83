// Hostile input for the e2e fuzz test: seeded MQTT junk sent over real sockets, each of which the
// broker must close by itself. Case `i` of seed `s` is always the same bytes (only the TOTP code
// inside a valid login differs), so a failure names a case that can be replayed alone.
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { connect as netConnect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { connect as tlsConnect } from 'node:tls'
import bcrypt from 'bcryptjs'
import mqttPacket from 'mqtt-packet'
import { initCertificates } from '../../src/certs/issue.js'
import { newSecret } from '../../src/crypto/totp.js'
import { createFileStore } from '../../src/stores/file.js'

export interface Rng { int (n: number): number; pick<T> (items: readonly T[]): T; bytes (n: number): Buffer }

/** mulberry32: tiny, fast and good enough to pick bytes; one stream per (seed, case). */
export function rng (seed: number): Rng {
  let a = seed >>> 0
  const next = (): number => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  const int = (n: number): number => Math.floor(next() * n)
  return { int, pick: (items) => items[int(items.length)] as any, bytes: (n) => Buffer.from(Array.from({ length: n }, () => int(256))) }
}

/** A login the broker accepts right now (`user|code` and the password). */
export interface Login { username: string; password: string }
export interface FuzzCase {
  index: number
  kind: string
  tls: boolean
  version: 4 | 5
  frames: Buffer[]
  /** Offsets where the bytes are split into separate writes, so frames also arrive in pieces. */
  cuts: number[]
}

type V = 4 | 5
const gen = (packet: Record<string, unknown>, v: V): Buffer => mqttPacket.generate(packet as any, { protocolVersion: v })

function varint (n: number): Buffer {
  const out: number[] = []
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    out.push(b)
  } while (n > 0)
  return Buffer.from(out)
}
const u16 = (n: number): Buffer => Buffer.from([n >> 8 & 0xff, n & 0xff])
const str = (b: Buffer): Buffer => Buffer.concat([u16(b.length), b])
const frame = (first: number, body: Buffer, length = body.length): Buffer => Buffer.concat([Buffer.from([first]), varint(length), body])

// The honest stream's topic is in here on purpose: the fuzz user may never write to it.
const TOPICS = ['metrics/fuzz/Temperatura', 'metrics/fuzz/Estado', 'metrics/alice/Temperatura', 'metrics/fuzz', '$SYS/x', 'a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r']
const FILTERS = ['metrics/fuzz/#', 'metrics/fuzz/+', '#', '+/+/+', 'metrics/alice/#', '$SYS/#', 'metrics/#/x']
const BAD_UTF8 = [[0xff], [0xc3, 0x28], [0xed, 0xa0, 0x80], [0xc0, 0xaf], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82]].map((b) => Buffer.from(b))
const WILDCARD_TOPICS = ['metrics/fuzz/#', 'metrics/+/Temperatura', '#', '+', 'metrics/alice/+', 'metrics/fuzz/Temp#ratura', 'metrics/fuzz/Temp+']

function connect (r: Rng, v: V, index: number, login: Login | undefined): Buffer {
  // Wrong password for a real account: a refusal that costs one cheap bcrypt, and no lockout (off in this test).
  const creds = login ?? { username: r.pick(['fuzz|000000', 'fuzz', '', '|', 'fuzz|1234567']), password: 'wrong password' }
  // Keepalive 1: a session left idle after its junk is closed by the broker within 1.5 s.
  return gen({ cmd: 'connect', protocolVersion: v, protocolId: 'MQTT', clientId: `fz-${index}`, clean: true, keepalive: 1, username: creds.username, password: Buffer.from(creds.password) }, v)
}

/** Any well-formed packet a client may send after CONNECT (the broker may still refuse it). */
function anyPacket (r: Rng, v: V): Buffer {
  const messageId = 1 + r.int(65535)
  const qos = r.int(3)
  switch (r.int(10)) {
    case 0: case 1: return gen({ cmd: 'publish', topic: r.pick(TOPICS), payload: r.bytes(r.int(64)), qos, messageId, retain: r.int(4) === 0, dup: false }, v)
    case 2: return gen({ cmd: 'publish', topic: 'metrics/alice/Temperatura', payload: '{"seq":-1}', qos: r.int(2), messageId, retain: false, dup: false }, v)
    case 3: return gen({ cmd: 'subscribe', messageId, subscriptions: [{ topic: r.pick(FILTERS), qos }] }, v)
    case 4: return gen({ cmd: 'unsubscribe', messageId, unsubscriptions: [r.pick(FILTERS)] }, v)
    case 5: return gen({ cmd: 'pingreq' }, v)
    case 6: return gen({ cmd: r.pick(['puback', 'pubrec', 'pubrel', 'pubcomp']), messageId }, v)
    case 7: return v === 5 ? gen({ cmd: 'auth', reasonCode: 0x18, properties: { authenticationMethod: 'x' } }, v) : gen({ cmd: 'pingreq' }, v)
    case 8: return gen({ cmd: 'disconnect', ...(v === 5 ? { reasonCode: r.pick([0, 4, 0x80]) } : {}) }, v)
    default: return gen({ cmd: 'publish', topic: 'metrics/fuzz/Temperatura', payload: '{"value":1}', qos: 1, messageId, retain: false, dup: false }, v)
  }
}

/** Packets an honest client of user fuzz sends, so the hostile one arrives mid-session. */
function benign (r: Rng, v: V): Buffer[] {
  return Array.from({ length: r.int(5) }, () => r.pick([
    () => gen({ cmd: 'pingreq' }, v),
    () => gen({ cmd: 'publish', topic: 'metrics/fuzz/Temperatura', payload: '{"value":1}', qos: r.int(2), messageId: 1 + r.int(100), retain: false, dup: false }, v),
    () => gen({ cmd: 'subscribe', messageId: 1 + r.int(100), subscriptions: [{ topic: 'metrics/fuzz/#', qos: r.int(2) }] }, v)
  ])())
}

function rawPublish (v: V, topic: Buffer, qos: number): Buffer {
  const id = qos > 0 ? u16(7) : Buffer.alloc(0)
  return frame(0x30 | qos << 1, Buffer.concat([str(topic), id, v === 5 ? Buffer.from([0]) : Buffer.alloc(0), Buffer.from('x')]))
}
function rawConnect (v: V, clientId: Buffer): Buffer {
  return frame(0x10, Buffer.concat([str(Buffer.from('MQTT')), Buffer.from([v, 0x02, 0, 1]), v === 5 ? Buffer.from([0]) : Buffer.alloc(0), str(clientId)]))
}
function rawSubscribe (v: V, filter: Buffer): Buffer {
  return frame(0x82, Buffer.concat([u16(9), v === 5 ? Buffer.from([0]) : Buffer.alloc(0), str(filter), Buffer.from([1])]))
}
/** The packet with a remaining length that does not match its body. */
function relength (r: Rng, p: Buffer): Buffer {
  let lenBytes = 1
  while (((p[lenBytes] as number) & 0x80) !== 0) lenBytes++
  const body = p.subarray(1 + lenBytes)
  const wrong = r.pick([0, 1, body.length - 1, body.length + 1 + r.int(50), r.int(body.length), 127, 128, 16383, 16384])
  return frame(p[0] as number, body, Math.max(0, wrong === body.length ? wrong + 1 : wrong))
}
function mutate (r: Rng, b: Buffer, count: number): Buffer {
  let out = Buffer.from(b)
  for (let i = 0; i < count && out.length > 0; i++) {
    const at = r.int(out.length)
    switch (r.int(6)) {
      case 0: out[at] = r.int(256); break
      case 1: out[at] = (out[at] as number) ^ (1 << r.int(8)); break
      case 2: out = Buffer.concat([out.subarray(0, at), r.bytes(1 + r.int(4)), out.subarray(at)]); break
      case 3: out = Buffer.concat([out.subarray(0, at), out.subarray(at + 1 + r.int(4))]); break
      case 4: out = Buffer.concat([out.subarray(0, at), out.subarray(at, at + 1 + r.int(16)), out.subarray(at)]); break
      default: out[at] = r.pick([0x00, 0x7f, 0x80, 0xff, 0x23, 0x2b, 0x2f])
    }
  }
  return out
}

// Identifiers: names a broker may keep as keys (client ids, filters, topics, property keys).
// Members of the prototypes a plain object or array inherits from, read from this Node.
const PROTO_NAMES = [...new Set([Object.prototype, Function.prototype, Array.prototype]
  .flatMap((p) => Object.getOwnPropertyNames(p)).concat(['__proto__', 'prototype', 'constructor']))]
/**
 * Stands for an invalid UTF-8 surrogate in a generated name. mqtt-packet encodes U+FFFD (and
 * a lone UTF-16 surrogate, which Node writes as U+FFFD) as EF BF BD; the frames of identifier
 * cases have those bytes replaced by an encoded surrogate (ED A0 80 / ED BF BF, same length),
 * which MQTT forbids [MQTT-1.5.4-1] and no JS string encodes to.
 */
const SURROGATE = '\ufffd'
const LEVELS = ['', '+', '#', '$', '$SYS', 'metrics', 'fuzz', 'alice', 'Temperatura', 'x', '\u0000', '\u0000x', 'a\u0000', '\u0001', '\u001f', '\u007f', '\u0085',
  '\u2028', '\ufeff', '\uffff', '\u{1F600}', '\ud800', '\udfff', SURROGATE, `a${SURROGATE}b`, ' ', '%s', '..', '\\']
// limits.maxPacketSize as the fuzz test runs the broker (the default).
const PACKET_LIMIT = 65_536

/** A name: a prototype member, a mix of levels around them, or a long one. */
function ident (r: Rng): string {
  switch (r.int(6)) {
    case 0: case 1: return r.pick(PROTO_NAMES)
    case 2: return r.pick(['metrics/fuzz/', 'metrics/alice/', '', '/', '$SYS/']) + r.pick(PROTO_NAMES) + r.pick(['', '/#', '/+', '/x', '/__proto__'])
    case 3: case 4: return Array.from({ length: 1 + r.int(5) }, () => r.int(2) === 0 ? r.pick(PROTO_NAMES) : r.pick(LEVELS)).join(r.pick(['/', '/', '//', '']))
    default: {
      const unit = r.pick([...PROTO_NAMES, ...LEVELS.filter((l) => l !== '')])
      const length = r.pick([23, 24, 255, 256, 257, 1024, 1024, 4096])
      return unit.repeat(Math.ceil(length / unit.length)).slice(0, length)
    }
  }
}
/** Up to four user properties (MQTT 5) with generated keys and values. */
function userProperties (r: Rng): Record<string, string | string[]> {
  const props: Record<string, string | string[]> = Object.create(null)
  for (let i = r.int(4); i > 0; i--) props[ident(r)] = r.int(3) === 0 ? [ident(r), ident(r)] : ident(r)
  return props
}
/** mqtt-packet refuses some values (a Subscription Identifier out of range): then the raw packet below. */
function tryGen (packet: Record<string, unknown>, v: V, raw: () => Buffer): Buffer {
  try {
    const b = gen(packet, v)
    return b.length > 0 ? b : raw()
  } catch {
    return raw()
  }
}
/** A SUBSCRIBE carrying a Subscription Identifier of `id` (VBI as given, even out of range). */
function rawSubscribeWithId (filter: string, id: number): Buffer {
  const props = Buffer.concat([Buffer.from([0x0b]), varint(id)])
  return frame(0x82, Buffer.concat([u16(11), varint(props.length), props, str(Buffer.from(filter)), Buffer.from([1])]))
}
/** `build(n)` sized so the whole packet is `target` bytes (a name of n bytes grows it by n). */
function sized (build: (n: number) => Buffer, target: number): Buffer {
  let n = Math.max(0, target - build(0).length)
  for (let i = 0; i < 3; i++) {
    const b = build(n)
    if (b.length === target || n === 0) return b
    n = Math.max(0, n + target - b.length)
  }
  return build(n)
}
/** Encoded U+FFFD -> an encoded surrogate, in place of the SURROGATE stand-in. */
function surrogates (r: Rng, b: Buffer): Buffer {
  for (let at = b.indexOf(Buffer.from([0xef, 0xbf, 0xbd])); at >= 0; at = b.indexOf(Buffer.from([0xef, 0xbf, 0xbd]), at + 3)) {
    b.set(r.int(2) === 0 ? [0xed, 0xa0, 0x80] : [0xed, 0xbf, 0xbf], at)
  }
  return b
}

/** Packets of a logged-in client that use generated names everywhere a name goes. */
function identifierPackets (r: Rng, v: V): Buffer[] {
  const props = (extra: Record<string, unknown> = {}): Record<string, unknown> => v === 5 && r.int(2) === 0 ? { properties: { userProperties: userProperties(r), ...extra } } : {}
  return Array.from({ length: 1 + r.int(5) }, (): Buffer => {
    const messageId = 1 + r.int(65535)
    switch (r.int(12)) {
      case 0: case 1: case 2: {
        const subscriptions = Array.from({ length: 1 + r.int(4) }, () => ({ topic: r.int(4) === 0 ? r.pick(FILTERS) : ident(r), qos: r.int(3) }))
        const si = v === 5 && r.int(3) === 0 ? { subscriptionIdentifier: r.pick([1, 2, 268_435_455, 0, 268_435_456, 1 + r.int(1000)]) } : {}
        const raw = (): Buffer => rawSubscribeWithId(subscriptions[0]?.topic ?? 'x', (si as { subscriptionIdentifier?: number }).subscriptionIdentifier ?? 1)
        return tryGen({ cmd: 'subscribe', messageId, subscriptions, ...props(si) }, v, raw)
      }
      case 3: case 4: return gen({ cmd: 'unsubscribe', messageId, unsubscriptions: Array.from({ length: 1 + r.int(3) }, () => r.int(4) === 0 ? r.pick(FILTERS) : ident(r)), ...props() }, v)
      case 5: case 6: case 7: {
        const topic = r.pick(['', 'metrics/fuzz/', 'metrics/alice/']) + ident(r)
        const extra = v === 5 && r.int(3) === 0 ? r.pick<Record<string, unknown>>([{ responseTopic: ident(r) }, { contentType: ident(r) }, { subscriptionIdentifier: 1 + r.int(100) }, { correlationData: Buffer.from(ident(r)) }]) : {}
        return tryGen({ cmd: 'publish', topic, payload: 'x', qos: r.int(3), messageId, retain: r.int(4) === 0, dup: false, ...props(extra) }, v, () => rawPublish(v, Buffer.from(topic), 1))
      }
      case 8: return gen({ cmd: 'pubrel', messageId: r.int(2) === 0 ? messageId : 1 + r.int(8) }, v)
      // A name as long as a packet may be: the limit, one byte under, one over (too large: closed);
      // MQTT 5 also as a user property value under a prototype-named key.
      case 9: {
        const target = PACKET_LIMIT + r.pick([-1, 0, 1])
        const unit = r.pick(PROTO_NAMES)
        const name = (n: number): string => unit.repeat(Math.ceil(n / unit.length)).slice(0, n)
        return r.int(2) === 0 || v === 4
          ? sized((n) => gen({ cmd: 'unsubscribe', messageId, unsubscriptions: [name(Math.min(n, 65_535))] }, v), target)
          : sized((n) => gen({ cmd: 'publish', topic: 'metrics/fuzz/Temperatura', payload: 'x', qos: 1, messageId, retain: false, dup: false, properties: { userProperties: { [unit]: name(Math.min(n, 65_535)) } } }, v), target)
      }
      default: return gen({ cmd: 'pingreq' }, v)
    }
  })
}

/** A valid login whose client id (and, MQTT 5, user properties and will) are generated names. */
function identifierConnect (r: Rng, v: V, login: Login): Buffer {
  // mqtt-packet will not write an empty will topic (ident can be ''): a NUL, refused as well, stands in.
  const willTopic = r.int(4) === 0 ? r.pick(['metrics/fuzz/', '']) + ident(r) : undefined
  const will = willTopic === undefined ? {} : { will: { topic: willTopic === '' ? '\u0000' : willTopic, payload: Buffer.from('w'), qos: r.int(2), retain: false } }
  const build = (clientId: string): Buffer => gen({
    cmd: 'connect', protocolVersion: v, protocolId: 'MQTT', clientId, clean: true, keepalive: 1, username: login.username, password: Buffer.from(login.password),
    ...will, ...(v === 5 && r.int(2) === 0 ? { properties: { userProperties: userProperties(r) } } : {})
  }, v)
  if (r.int(6) > 0) return build(ident(r))
  // A client id as long as the packet limit allows, or one byte more.
  const unit = r.pick(PROTO_NAMES)
  return sized((n) => build(unit.repeat(Math.ceil(n / unit.length)).slice(0, Math.min(n, 65_535))), PACKET_LIMIT + r.pick([-1, 0, 1]))
}

export const KINDS = {
  'bad-remaining-length': 10, truncated: 10, 'bad-utf8': 10, 'nul-in-topic': 6, 'wildcard-publish': 6, 'duplicate-connect': 6,
  'before-connect': 8, 'junk-after-connect': 12, 'oversized-varint': 8, 'huge-claimed-length': 2, 'v5-properties': 6, mutate: 24, 'plain-junk': 2,
  identifiers: 12, 'identifier-connect': 8
} as const
const KIND_LIST = Object.entries(KINDS).flatMap(([k, w]) => Array<string>(w).fill(k))

/** Case `index` of `seed`; `login` gives credentials that are valid now. */
export function fuzzCase (seed: number, index: number, login: () => Login): FuzzCase {
  const r = rng(seed ^ Math.imul(index + 1, 0x9E3779B1))
  const v: V = r.int(2) === 0 ? 4 : 5
  const kind = r.pick(KIND_LIST)
  const ok = (): Buffer => connect(r, v, index, login())
  const session = (): Buffer[] => [ok(), ...benign(r, v)]
  const bad = (): Buffer => connect(r, v, index, r.int(3) === 0 ? undefined : login())
  const frames: Buffer[] = []
  const done = (version: V): FuzzCase => {
    const size = frames.reduce((n, f) => n + f.length, 0)
    const cuts = [...new Set([0, r.int(size), r.int(size), size])].sort((a, b) => a - b)
    return { index, kind, tls: kind !== 'plain-junk', version, frames, cuts }
  }
  switch (kind) {
    case 'bad-remaining-length': frames.push(...(r.int(2) === 0 ? [relength(r, bad())] : [...session(), relength(r, anyPacket(r, v))])); break
    case 'truncated': {
      if (r.int(2) === 0) frames.push(bad())
      else frames.push(...session(), anyPacket(r, v))
      const last = frames.pop() as Buffer
      frames.push(last.subarray(0, 1 + r.int(last.length - 1)))
      break
    }
    case 'bad-utf8': {
      const junk = Buffer.concat([Buffer.from(r.pick(['', 'metrics/fuzz/', 'metrics/alice/Temperatura'])), r.pick(BAD_UTF8)])
      if (r.int(4) === 0) frames.push(rawConnect(v, junk))
      else frames.push(...session(), r.int(2) === 0 ? rawPublish(v, junk, r.int(3)) : rawSubscribe(v, junk))
      break
    }
    case 'nul-in-topic': frames.push(...session(), rawPublish(v, Buffer.from(r.pick(['metrics/fuzz/Temperatura\0', 'metrics/alice/Temperatura\0x', '\0', 'metrics/fuzz/\0/x'])), r.int(3))); break
    case 'wildcard-publish': frames.push(...session(), rawPublish(v, Buffer.from(r.pick(WILDCARD_TOPICS)), r.int(3))); break
    case 'duplicate-connect': frames.push(...session(), r.int(2) === 0 ? ok() : bad()); break
    case 'before-connect': frames.push(anyPacket(r, v), ...(r.int(2) === 0 ? [ok()] : [])); break
    case 'junk-after-connect': frames.push(...session(), r.bytes(1 + r.int(256))); break
    case 'oversized-varint': {
      const big = r.pick([[0xff, 0xff, 0xff, 0xff, 0x7f], [0x80, 0x80, 0x80, 0x80, 0x00], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]])
      frames.push(...(r.int(2) === 0 ? session() : []), Buffer.concat([Buffer.from([r.pick([0x10, 0x30, 0x82, 0xc0, 0xe0])]), Buffer.from(big), r.bytes(r.int(32))]))
      break
    }
    // 256 MiB announced, 96 KiB sent: the broker must not wait to buffer the rest.
    case 'huge-claimed-length': frames.push(...(r.int(2) === 0 ? [ok()] : []), Buffer.concat([Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]), Buffer.alloc(96 * 1024, 0x61)])); break
    case 'v5-properties': {
      const props = r.pick<Record<string, unknown>>([{ topicAlias: 0 }, { topicAlias: 65535 }, { subscriptionIdentifier: 0 }, { payloadFormatIndicator: true }, { messageExpiryInterval: 0xffffffff }])
      const topic = r.int(2) === 0 ? '' : 'metrics/fuzz/Temperatura'
      frames.push(connect(r, 5, index, login()), gen({ cmd: 'publish', topic, payload: r.int(2) === 0 ? r.bytes(8) : 'x', qos: r.int(2), messageId: 3, retain: false, dup: false, properties: props }, 5))
      return done(5)
    }
    // Generated names after a valid login (and, with 'identifier-connect', inside it).
    case 'identifiers': frames.push(...session(), ...identifierPackets(r, v).map((f) => surrogates(r, f))); break
    case 'identifier-connect': frames.push(surrogates(r, identifierConnect(r, v, login())), ...identifierPackets(r, v).map((f) => surrogates(r, f))); break
    case 'mutate': {
      const rest = Array.from({ length: 1 + r.int(8) }, () => anyPacket(r, v))
      const head = ok()
      const m = 1 + r.int(4)
      frames.push(...(r.int(2) === 0 ? [mutate(r, Buffer.concat([head, ...rest]), m)] : [head, mutate(r, Buffer.concat(rest), m)]))
      break
    }
    default: frames.push(r.bytes(1 + r.int(200)))
  }
  return done(v)
}

export interface Outcome {
  index: number
  kind: string
  /** server: the broker closed it; bound: still open `boundMs` after our last byte; refused: no TLS session. */
  closedBy: 'server' | 'bound' | 'refused'
  /** CONNACK return/reason code, if the broker sent one. */
  connack?: number
  bytes: Buffer
}

export interface Target { port: number; ca: Buffer; boundMs: number }

/**
 * Opens one socket and writes the case. `written` settles once our bytes are out; `closed` once
 * the socket is gone: closed by the broker, or by us `boundMs` after our last byte.
 */
export function launch (c: FuzzCase, to: Target): { written: Promise<void>, closed: Promise<Outcome> } {
  const bytes = Buffer.concat(c.frames)
  const sock: Socket = c.tls
    ? tlsConnect({ host: '127.0.0.1', port: to.port, ca: to.ca, servername: 'localhost' })
    : netConnect({ host: '127.0.0.1', port: to.port })
  let state: 'connecting' | 'open' | 'expired' = 'connecting'
  let connack: number | undefined
  const parser = mqttPacket.parser({ protocolVersion: c.version })
  parser.on('packet', (p: any) => { if (p.cmd === 'connack' && connack === undefined) connack = p.reasonCode ?? p.returnCode })
  parser.on('error', () => {})
  sock.on('data', (d: Buffer) => { parser.parse(d) })
  sock.on('error', () => {}) // resets and EPIPE are the broker hanging up: 'close' follows
  const expire = (): void => { state = 'expired'; sock.destroy() }
  // Until our bytes are out the bound also covers the TLS handshake.
  let timer = setTimeout(expire, to.boundMs + 10_000)
  const closed = new Promise<Outcome>((resolve) => {
    sock.on('close', () => {
      clearTimeout(timer)
      const closedBy = state === 'expired' ? 'bound' : state === 'open' ? 'server' : 'refused'
      resolve({ index: c.index, kind: c.kind, closedBy, ...(connack === undefined ? {} : { connack }), bytes })
    })
  })
  const written = new Promise<void>((resolve) => {
    sock.once('close', () => { resolve() })
    sock.once(c.tls ? 'secureConnect' : 'connect', () => {
      state = 'open'
      void (async () => {
        for (let i = 1; i < c.cuts.length && !sock.destroyed; i++) {
          sock.write(bytes.subarray(c.cuts[i - 1], c.cuts[i]))
          await new Promise((resolve) => setTimeout(resolve, 1))
        }
        if (!sock.destroyed) {
          clearTimeout(timer)
          timer = setTimeout(expire, to.boundMs)
        }
        resolve()
      })()
    })
  })
  return { written, closed }
}

export interface FuzzRun { outcomes: Outcome[]; packets: number; bytes: number }

/** Runs cases `from..from+count-1` over `senders` concurrent writers, at most `maxOpen` sockets open at once. */
export async function runFuzz (opts: { seed: number; from: number; count: number; senders: number; maxOpen: number; target: Target; login: () => Login }): Promise<FuzzRun> {
  const outcomes: Outcome[] = []
  const open = new Set<Promise<void>>()
  let next = opts.from
  let packets = 0
  let bytes = 0
  const sender = async (): Promise<void> => {
    while (next < opts.from + opts.count) {
      while (open.size >= opts.maxOpen) await Promise.race(open)
      const c = fuzzCase(opts.seed, next++, opts.login)
      packets += c.frames.length
      bytes += c.frames.reduce((n, f) => n + f.length, 0)
      const { written, closed } = launch(c, opts.target)
      const tracked: Promise<void> = closed.then((o) => { outcomes.push(o); open.delete(tracked) })
      open.add(tracked)
      await written
    }
  }
  await Promise.all(Array.from({ length: opts.senders }, sender))
  while (open.size > 0) await Promise.race(open)
  return { outcomes, packets, bytes }
}

export interface GcResult { heapUsed: number; external: number; arrayBuffers: number; rss: number }

export interface BrokerProcess {
  pid: number
  port: number
  /** Base URL of /metrics and /healthz, when the config turns monitoring on. */
  monitoring: string | undefined
  /** Counts of each log `event` seen so far, and the last lines (for a failure message). */
  events: Map<string, number>
  tail: string[]
  /** Set once the process exited, with its code or signal. */
  exited: () => string | undefined
  /**
   * Runs a full GC in the broker; resolves with what survived it, in bytes: the V8 heap used,
   * memory outside it held by JS objects (`external`, which includes Buffers' `arrayBuffers`) and RSS.
   */
  gc: () => Promise<GcResult>
  /** Resident set size in bytes, from /proc (Linux). */
  rss: () => number
  /**
   * Resolves once the broker has written no line for `ms` (at most `max` ms): its log lines are
   * buffered in its heap until this process has read them, so memory is measured after that.
   */
  quiet: (ms: number, max: number) => Promise<void>
  stop: () => Promise<void>
}

/** The unlabelled samples of a Prometheus text page (`name value` lines). */
export async function scrape (base: string): Promise<Map<string, number>> {
  const text = await (await fetch(`${base}/metrics`)).text()
  return new Map(text.split('\n').filter((l) => /^[a-z_]+ /.test(l)).map((l) => [l.split(' ')[0] as string, Number(l.split(' ')[1])]))
}

// Test-only preload: a full GC on SIGUSR2, then one line with what survived it, so memory kept
// is told from garbage V8 has not collected yet (an idle process may not collect for a long time).
const GC_PRELOAD = `process.on('SIGUSR2', () => {
  globalThis.gc()
  const m = process.memoryUsage()
  process.stderr.write('fuzz-gc ' + JSON.stringify({ heapUsed: m.heapUsed, external: m.external, arrayBuffers: m.arrayBuffers, rss: m.rss }) + '\\n')
})
`

/**
 * Runs the built CLI (`dist/cli/main.js start`) as a child, so its memory is its own; the only
 * addition is the GC_PRELOAD above (node --expose-gc --require).
 */
export async function startBrokerProcess (cli: string, configFile: string, cwd: string): Promise<BrokerProcess> {
  const preload = join(cwd, 'gc-on-sigusr2.cjs')
  writeFileSync(preload, GC_PRELOAD)
  // tap adds its coverage hooks to every child's NODE_OPTIONS, whatever env is passed; they grow
  // the heap by a third. env(1) drops them and execs node in place (same pid, for /proc).
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, '--expose-gc', '--require', preload, cli, 'start', '--config', configFile], { cwd, stdio: ['ignore', 'pipe', 'pipe'] })
  const events = new Map<string, number>()
  const tail: string[] = []
  let exited: string | undefined
  let lastLine = Date.now()
  const keep = (line: string): void => { lastLine = Date.now(); tail.push(line); if (tail.length > 40) tail.shift() }
  const gcWaiters: Array<(m: GcResult) => void> = []
  createInterface({ input: child.stderr }).on('line', (line) => {
    if (line.startsWith('fuzz-gc ')) gcWaiters.shift()?.(JSON.parse(line.slice(8)))
    else keep(line)
  })
  let monitoring: string | undefined
  const ready = new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => { reject(new Error(`broker not ready in 15 s:\n${tail.join('\n')}`)) }, 15_000)
    child.on('exit', (code, signal) => { exited = `exit ${code ?? signal}`; clearTimeout(timer); reject(new Error(`broker exited (${exited}):\n${tail.join('\n')}`)) })
    createInterface({ input: child.stdout }).on('line', (line) => {
      keep(line)
      let e: { event?: string; listeners?: string[]; monitoring?: string }
      try { e = JSON.parse(line) } catch { return }
      if (e.event === undefined) return
      events.set(e.event, (events.get(e.event) ?? 0) + 1)
      if (e.event === 'broker.ready') { monitoring = e.monitoring; clearTimeout(timer); resolve(Number(String(e.listeners?.[0]).split(':').pop())) }
    })
  })
  const port = await ready.catch((err) => { child.kill('SIGKILL'); throw err })
  return {
    pid: child.pid as number,
    port,
    monitoring,
    events,
    tail,
    exited: () => exited,
    async gc () {
      return await new Promise((resolve, reject) => {
        const timer = setTimeout(() => { gcWaiters.splice(gcWaiters.indexOf(answer), 1); reject(new Error('no GC answer within 5 s')) }, 5000)
        const answer = (m: GcResult): void => { clearTimeout(timer); resolve(m) }
        gcWaiters.push(answer)
        child.kill('SIGUSR2')
      })
    },
    async quiet (ms, max) {
      for (const end = Date.now() + max; Date.now() - lastLine < ms && Date.now() < end;) {
        await new Promise((resolve) => setTimeout(resolve, Math.max(10, ms - (Date.now() - lastLine))))
      }
    },
    rss: () => 1024 * Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid as number}/status`, 'utf8'))?.[1]),
    async stop () {
      if (exited !== undefined) return
      const gone = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 8000)
      await gone
      clearTimeout(timer)
    }
  }
}

/** A throwaway folder for a broker process: certificates, and users written by writeUsers. */
export interface BrokerFolder { dir: string; ca: Buffer; secrets: Record<string, string> }

/**
 * Makes the folder (named `bastion-<name>-…`) and removes it when the test process exits, also
 * when a setup step threw and tap's teardowns never ran.
 */
export async function brokerFolder (name: string, users: readonly string[], password: string): Promise<BrokerFolder> {
  const dir = mkdtempSync(join(tmpdir(), `bastion-${name}-`))
  process.once('exit', () => { rmSync(dir, { recursive: true, force: true }) })
  await initCertificates({ outDir: join(dir, 'certs') })
  const secrets = await writeUsers(join(dir, 'data', 'users.json'), users, password)
  return { dir, ca: readFileSync(join(dir, 'certs', 'ca.crt')), secrets }
}

/**
 * Adds enabled users with `password` to the file store at `path`, as the CLI writes them but at
 * bcrypt cost 4 (these tests log in hundreds of times; the password work is not under test).
 * Returns each user's TOTP secret.
 */
export async function writeUsers (path: string, names: readonly string[], password: string): Promise<Record<string, string>> {
  const store = createFileStore(path)
  const secrets: Record<string, string> = {}
  for (const username of names) {
    const totpSecret = secrets[username] = newSecret()
    await store.add({ username, passwordHash: bcrypt.hashSync(password, 4), totpSecret, enabled: true, createdAt: new Date().toISOString() })
  }
  await store.close()
  return secrets
}
