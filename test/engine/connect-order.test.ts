// Packets a client sends right behind its CONNECT are handled after the CONNACK, in the order
// they were read [MQTT-3.2.0-1: the first packet from the server is CONNACK]
// (patches/aedes/0020). aedes let a packet read while the CONNECT was still at its first step
// (an asynchronous preConnect hook, or the turn before authentication) through as if it were
// the first packet: its SUBACK went out before the CONNACK. And a packet read once the CONNACK
// was written, while the session's queued messages were still being sent, overtook the ones
// waiting since before it. A bare aedes over plain TCP on 127.0.0.1, a raw 3.1.1 client.
import t from 'tap'
import { Readable } from 'node:stream'
import { startBareBroker } from '../helpers/bare-aedes.js'
import { bareClient as rawClient, type Packet } from '../helpers/bare-client.js'

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

const subscribe = (messageId: number, topic: string): Record<string, unknown> =>
  ({ cmd: 'subscribe', messageId, subscriptions: [{ topic, qos: 0 }] })
const seen = (got: Packet[]): string[] => got.map((p) => p.cmd === 'suback' ? `suback ${p.messageId as number}` : p.cmd)

t.test('a SUBSCRIBE read while the CONNECT is in its preConnect hook is answered after the CONNACK', async (t) => {
  const { broker, port } = await startBareBroker(t)
  // An asynchronous preConnect (a lookup, a rate limiter): the SUBSCRIBE below arrives during it.
  broker.preConnect = (_client, _packet, done) => { setTimeout(() => done(null, true), 150) }
  const c = await rawClient(t, port, 'eager')
  await sleep(30)
  c.send(subscribe(1, 'a'))
  await sleep(30)
  c.send(subscribe(2, 'b'))
  await c.until(() => c.got.length >= 3)
  t.same(seen(c.got), ['connack', 'suback 1', 'suback 2'], 'CONNACK first, then the SUBACKs in order')
})

t.test('a SUBSCRIBE read after the CONNACK does not overtake one waiting since before it', async (t) => {
  const { broker, port } = await startBareBroker(t)
  broker.preConnect = (_client, _packet, done) => { setTimeout(() => done(null, true), 150) }
  // The session's queued messages take a while to come out of the persistence: the connection
  // is not 'connected' (and the packets read before the CONNACK not handled) until they have.
  const persistence = broker.persistence as unknown as { outgoingStream: (client: unknown) => Readable }
  persistence.outgoingStream = () => Readable.from((async function * () { await sleep(400) })())
  const c = await rawClient(t, port, 'eager')
  await sleep(30)
  c.send(subscribe(1, 'a'))
  await c.until(() => c.got.some((p) => p.cmd === 'connack'))
  c.send(subscribe(2, 'b'))
  await c.until(() => c.got.length >= 3)
  t.same(seen(c.got), ['connack', 'suback 1', 'suback 2'], 'the SUBACKs in the order the SUBSCRIBEs were sent')
})
