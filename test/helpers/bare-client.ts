// A raw MQTT 3.1.1 client over plain TCP for the engine tests (test/engine): it sends exactly
// the packets it is given and keeps every packet it reads, in order.
import { connect as netConnect, type Socket } from 'node:net'
import mqttPacket from 'mqtt-packet'

export type Packet = Record<string, any> & { cmd: string }

export interface BareClient {
  socket: Socket
  /** Every packet read, in order. */
  got: Packet[]
  send: (p: Record<string, unknown>) => void
  /** Waits (10 ms steps, 3 s at most) until `ok()`. */
  until: (ok: () => boolean) => Promise<void>
  closed: Promise<void>
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** Connects to 127.0.0.1:`port` and sends a CONNECT for `clientId` (clean session unless `connect` says otherwise); does not wait for the CONNACK. */
export async function bareClient (t: Tap.Test, port: number, clientId: string, connect: Record<string, unknown> = {}): Promise<BareClient> {
  const socket = netConnect({ host: '127.0.0.1', port })
  t.teardown(() => socket.destroy())
  const got: Packet[] = []
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  parser.on('packet', (p) => got.push(p as Packet))
  socket.on('data', (d) => parser.parse(d))
  socket.on('error', () => {})
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
  const send = (p: Record<string, unknown>): void => { socket.write(mqttPacket.generate(p as unknown as mqttPacket.Packet)) }
  send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 60, ...connect })
  const until = async (ok: () => boolean): Promise<void> => { for (let i = 0; i < 300 && !ok(); i++) await sleep(10) }
  return { socket, got, send, until, closed }
}
