// Raw sockets for the limits tests: what mqtt.js will not do (stay silent, drip bytes, never read).
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import mqttPacket, { type Packet } from 'mqtt-packet'
import type { Harness } from './harness.js'

/** A TLS socket to the harness, resolved once the handshake is done; rejects if it is refused. */
export function rawTls (h: Harness): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: h.port, ca: h.ca, servername: 'localhost' }, () => {
      s.off('error', reject)
      s.on('error', () => {})
      resolve(s)
    })
    s.once('error', reject)
    s.once('close', () => reject(new Error('closed before the TLS handshake finished')))
  })
}

/** A plain TCP socket to the harness' TLS port (no TLS at all). */
export function rawTcp (h: Harness): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = netConnect(h.port, '127.0.0.1', () => { s.off('error', reject); s.on('error', () => {}); resolve(s) })
    s.once('error', reject)
  })
}

/** Whether `socket` closes within `ms` (a bound for the test, not a timing assertion). */
export function closesWithin (socket: Socket, ms: number): Promise<boolean> {
  if (socket.destroyed) return Promise.resolve(true)
  return new Promise((resolve) => {
    const timer = setTimeout(() => { socket.off('close', on); resolve(false) }, ms)
    function on (): void { clearTimeout(timer); resolve(true) }
    socket.once('close', on)
    // A socket whose peer closed is only seen closing while it reads.
    socket.resume()
  })
}

export interface RawClient {
  socket: TLSSocket
  /** Every packet read so far, in order. */
  packets: Packet[]
  send (packet: Packet): void
  /** The next packet of `cmd` not yet taken, or undefined after `ms`. */
  next (cmd: Packet['cmd'], ms?: number): Promise<Packet | undefined>
  /** Resolves when the socket has closed (true) or `ms` passed (false). */
  closed (ms: number): Promise<boolean>
}

/** A TLS socket that speaks MQTT packet by packet; CONNECTs with `connect` and waits for CONNACK. */
export async function rawClient (h: Harness, connect: Record<string, unknown>, opts: { read?: boolean } = {}): Promise<RawClient> {
  const socket = await rawTls(h)
  const protocolVersion = (connect.protocolVersion as number | undefined) ?? 5
  const parser = mqttPacket.parser({ protocolVersion })
  const packets: Packet[] = []
  let taken = 0
  const waiters = new Set<() => void>()
  parser.on('packet', (p: Packet) => { packets.push(p); for (const w of waiters) w() })
  socket.on('data', (b: Buffer) => parser.parse(b))
  let isClosed = false
  socket.on('close', () => { isClosed = true; for (const w of waiters) w() })
  const c: RawClient = {
    socket,
    packets,
    send (packet) { socket.write(mqttPacket.generate(packet, { protocolVersion })) },
    next (cmd, ms = 5000) {
      return new Promise((resolve) => {
        const look = (): boolean => {
          for (let i = taken; i < packets.length; i++) {
            if (packets[i]?.cmd === cmd) { taken = i + 1; resolve(packets[i]); return true }
          }
          return isClosed
        }
        if (look()) { if (isClosed) resolve(undefined); return }
        const timer = setTimeout(() => { waiters.delete(w); resolve(undefined) }, ms)
        const w = (): void => {
          if (look()) {
            clearTimeout(timer)
            waiters.delete(w)
            resolve(undefined)
          }
        }
        waiters.add(w)
      })
    },
    closed (ms) { return isClosed ? Promise.resolve(true) : closesWithin(socket, ms) }
  }
  if (opts.read === false) socket.pause()
  c.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion, clean: true, clientId: '', keepalive: 30, ...connect } as Packet)
  return c
}

/** Polls `ok` every 50 ms until it holds (true) or `ms` passed (false). */
export async function until (ms: number, ok: () => boolean): Promise<boolean> {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) return false
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return true
}
