// An MQTT client over one TLS socket that sends exactly the packets it is given (mqtt-packet
// builds them) and keeps every packet it reads, in order: for e2e tests that must send what
// mqtt.js would not (names it would treat as keys, QoS 2 without PUBREL) against a broker on a port.
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import mqttPacket from 'mqtt-packet'

export type Packet = Record<string, any> & { cmd: string }
/** What a wait ends with besides a packet: the socket closed (and nothing is left), or the time ran out. */
export type End = 'closed' | 'timeout'

export interface RawTarget {
  port: number
  ca: Buffer
  /** A loopback source address (127.0.0.0/8), e.g. to count as another client address. */
  localAddress?: string
}

export interface RawMqtt {
  readonly socket: TLSSocket
  readonly version: 4 | 5
  /** Writes one packet; false when the socket's buffer is full (wait for drain()). */
  send (packet: Record<string, unknown>): boolean
  /** Also tells `listener` of every packet as it is read (it still goes to next() / until()). */
  onPacket (listener: (p: Packet) => void): void
  /** Resolves once the socket can take more, or is gone. */
  drain (): Promise<void>
  /** The next packet not yet taken. */
  next (ms: number): Promise<Packet | End>
  /** The next packet `match` accepts; the packets before it are taken and dropped. */
  until (match: (p: Packet) => boolean, ms: number): Promise<Packet | End>
  isClosed (): boolean
  /** Resolves true once the socket is closed, false after `ms`. */
  closed (ms: number): Promise<boolean>
  destroy (): void
}

/** A TLS session with the broker (server name `localhost`, verified against `ca`). */
export async function rawMqtt (to: RawTarget, version: 4 | 5): Promise<RawMqtt> {
  const socket = await new Promise<TLSSocket>((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: to.port, ca: to.ca, servername: 'localhost', ...(to.localAddress === undefined ? {} : { localAddress: to.localAddress }) })
    // TLS 1.3 servers send their session tickets after the handshake. The broker's sockets keep
    // Nagle's algorithm on, so its first answer (CONNACK) would wait until this side ACKs the
    // tickets, which Linux delays by up to 40 ms when it has nothing to send: wait for them (at
    // most 100 ms), then write in a later turn (a write from inside 'session' is not sent).
    const ticket = new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 100)
      s.once('session', () => { clearTimeout(timer); setImmediate(resolve) })
    })
    s.once('secureConnect', () => {
      s.off('error', reject)
      void ticket.then(() => { resolve(s) })
    })
    s.once('error', reject)
    s.once('close', () => reject(new Error('closed before the TLS handshake finished')))
  })
  socket.on('error', () => {}) // a reset is the broker hanging up: 'close' follows
  // One small packet per round trip: Nagle's algorithm would hold each one for a delayed ACK.
  socket.setNoDelay(true)
  const parser = mqttPacket.parser({ protocolVersion: version })
  const inbox: Packet[] = []
  const waiters = new Set<() => void>()
  let closed = socket.destroyed
  const wake = (): void => { for (const w of [...waiters]) w() }
  const listeners: Array<(p: Packet) => void> = []
  parser.on('packet', (p: Packet) => {
    for (const l of listeners) l(p)
    inbox.push(p)
    wake()
  })
  parser.on('error', (err: Error) => { inbox.push({ cmd: 'parse-error', message: err.message }); wake() })
  socket.on('data', (b: Buffer) => { parser.parse(b) })
  socket.on('close', () => { closed = true; wake() })

  const wait = (take: () => Packet | undefined, ms: number): Promise<Packet | End> => new Promise((resolve) => {
    const settle = (): boolean => {
      const p = take()
      if (p !== undefined) { resolve(p); return true }
      if (closed) { resolve('closed'); return true }
      return false
    }
    if (settle()) return
    const timer = setTimeout(() => { waiters.delete(check); resolve('timeout') }, ms)
    function check (): void {
      if (settle()) { clearTimeout(timer); waiters.delete(check) }
    }
    waiters.add(check)
  })

  return {
    socket,
    version,
    send (packet) {
      if (socket.destroyed) return false
      return socket.write(mqttPacket.generate(packet as any, { protocolVersion: version }))
    },
    onPacket (listener) { listeners.push(listener) },
    async drain () {
      if (socket.destroyed || !socket.writableNeedDrain) return
      await new Promise<void>((resolve) => {
        const done = (): void => { socket.off('drain', done); socket.off('close', done); resolve() }
        socket.on('drain', done)
        socket.on('close', done)
      })
    },
    next: async (ms) => await wait(() => inbox.shift(), ms),
    until: async (match, ms) => await wait(() => {
      while (inbox.length > 0) {
        const p = inbox.shift() as Packet
        if (match(p)) return p
      }
      return undefined
    }, ms),
    isClosed: () => closed,
    async closed (ms) {
      if (closed) return true
      // A socket whose peer hung up is only seen closing while it reads: it does (parser above).
      return await new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => { socket.off('close', on); resolve(false) }, ms)
        function on (): void { clearTimeout(timer); resolve(true) }
        socket.once('close', on)
      })
    },
    destroy () { socket.destroy() }
  }
}

export interface Login { clientId: string; username: string; password: string; keepalive?: number; properties?: Record<string, unknown> }

/** Opens a session and sends CONNECT; resolves with the client and whatever answered it. */
export async function rawLogin (to: RawTarget, version: 4 | 5, login: Login, ms = 10_000): Promise<{ c: RawMqtt; connack: Packet | End }> {
  const c = await rawMqtt(to, version)
  c.send({
    cmd: 'connect', protocolId: 'MQTT', protocolVersion: version, clean: true, keepalive: login.keepalive ?? 60,
    clientId: login.clientId, username: login.username, password: Buffer.from(login.password),
    ...(login.properties === undefined ? {} : { properties: login.properties })
  })
  return { c, connack: await c.next(ms) }
}

/** The CONNACK's code (3.1.1 return code or MQTT 5 reason code), or what happened instead. */
export function connackCode (p: Packet | End): number | string {
  if (typeof p === 'string') return p
  if (p.cmd !== 'connack') return `${p.cmd} instead of CONNACK`
  return (p.reasonCode ?? p.returnCode ?? 0) as number
}

/** A short description of what arrived, for failure messages. */
export function describe (p: Packet | End): string {
  if (typeof p === 'string') return p
  const code = p.reasonCode ?? p.returnCode
  return [p.cmd, p.messageId === undefined ? '' : `#${String(p.messageId)}`, p.granted === undefined ? '' : JSON.stringify(p.granted),
    code === undefined ? '' : `0x${Number(code).toString(16)}`, p.topic === undefined ? '' : JSON.stringify(p.topic)].filter((s) => s !== '').join(' ')
}
