// aedes counts each client's packets being handled and calls packetHandled(client) when one is
// done (patches/aedes/0021): a PUBLISH once answered, a SUBSCRIBE once its SUBACK is written.
// Our rate kick (src/limits/kick.ts) and shutdown drain (src/shutdown.ts) rely on it. A bare
// aedes over plain TCP on 127.0.0.1; what the broker writes is traced at the socket.
import t from 'tap'
import type { Client } from 'aedes'
import { startBareBroker } from '../helpers/bare-aedes.js'
import { bareClient } from '../helpers/bare-client.js'

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))
const handling = (client: Client): number => (client as unknown as { _handling: number })._handling
const WRITTEN: Record<number, string> = { 0x20: 'CONNACK written', 0x40: 'PUBACK written', 0x50: 'PUBREC written', 0x70: 'PUBCOMP written', 0x90: 'SUBACK written' }

/** A bare broker whose authorizePublish answers after 100 ms, and a trace of what it writes and when packets are handled. */
async function traced (t: Tap.Test): Promise<{ port: number; trace: string[]; published: () => number; clientOf: () => Client }> {
  const { broker, port } = await startBareBroker(t)
  const trace: string[] = []
  let client: Client | undefined
  let published = 0
  broker.authorizePublish = (_client, _packet, done) => { setTimeout(() => done(null), 100) }
  broker.published = (_packet, c, done) => { if (c !== null) published++; done(null) }
  ;(broker as unknown as { packetHandled: (c: Client) => void }).packetHandled = (c) => { trace.push(`handled, ${handling(c)} left`) }
  broker.on('client', (c) => {
    client = c
    const conn = c.conn as unknown as { write: (chunk: unknown, ...rest: unknown[]) => boolean }
    const write = conn.write.bind(conn)
    conn.write = (chunk, ...rest) => {
      // mqtt-packet writes a packet in pieces (fixed header, length, body): its first byte names it.
      const first = Buffer.isBuffer(chunk) ? WRITTEN[chunk[0] as number] : undefined
      if (first !== undefined) trace.push(first)
      return write(chunk, ...rest)
    }
  })
  return { port, trace, published: () => published, clientOf: () => client as Client }
}

t.test('a QoS 1 PUBLISH is counted until its PUBACK is written, then reported handled', async (t) => {
  const { port, trace, clientOf } = await traced(t)
  const c = await bareClient(t, port, 'p1')
  await c.until(() => c.got.length > 0)
  t.same(trace, ['CONNACK written', 'handled, 0 left'], 'the CONNECT is a packet handled too')
  trace.length = 0
  c.send({ cmd: 'publish', topic: 't', payload: Buffer.from('m'), qos: 1, messageId: 7, retain: false, dup: false })
  await sleep(50)
  t.equal(handling(clientOf()), 1, 'counted while its authorisation is pending')
  await c.until(() => c.got.some((p) => p.cmd === 'puback'))
  await sleep(20)
  t.same(trace, ['PUBACK written', 'handled, 0 left'], 'reported once its PUBACK is written')
})

t.test('a QoS 2 PUBLISH repeating an id that awaits PUBREL is reported handled without a publish', async (t) => {
  const { port, trace, published, clientOf } = await traced(t)
  const c = await bareClient(t, port, 'p2')
  await c.until(() => c.got.length > 0)
  trace.length = 0
  const publish = { cmd: 'publish', topic: 't', payload: Buffer.from('m'), qos: 2, messageId: 5, retain: false, dup: false }
  c.send(publish)
  await c.until(() => c.got.filter((p) => p.cmd === 'pubrec').length === 1)
  c.send({ ...publish, dup: true })
  await c.until(() => c.got.filter((p) => p.cmd === 'pubrec').length === 2)
  await sleep(20)
  t.equal(published(), 1, 'published once')
  t.same(trace, ['PUBREC written', 'handled, 0 left', 'PUBREC written', 'handled, 0 left'], 'both reported, each after its PUBREC')
  t.equal(handling(clientOf()), 0, 'nothing left counted')
})

t.test('a SUBSCRIBE is reported handled after its SUBACK', async (t) => {
  const { port, trace } = await traced(t)
  const c = await bareClient(t, port, 's1')
  await c.until(() => c.got.length > 0)
  trace.length = 0
  c.send({ cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'a/#', qos: 1 }] })
  await c.until(() => c.got.some((p) => p.cmd === 'suback'))
  await sleep(20)
  t.same(trace, ['SUBACK written', 'handled, 0 left'], 'reported once its SUBACK is written')
})
