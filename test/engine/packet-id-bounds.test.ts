// A packet id must lie inside its packet (patches/mqtt-packet/0006). A QoS 1 PUBLISH whose
// Remaining Length ends with its topic has no room for one: it is malformed [MQTT-4.13.1-1]
// and the connection is closed. Unpatched, the parser took the next packet's first two bytes
// as the id and the broker answered and published. A bare aedes over plain TCP on 127.0.0.1.
import t from 'tap'
import { startBareBroker } from '../helpers/bare-aedes.js'
import { bareClient } from '../helpers/bare-client.js'

t.test('a QoS 1 PUBLISH with no room for its packet id closes the connection; nothing is published or answered', async (t) => {
  const { broker, port } = await startBareBroker(t)
  const published: string[] = []
  broker.published = (packet, client, done) => { if (client !== null) published.push(packet.topic); done(null) }
  const c = await bareClient(t, port, 'short-id')
  await c.until(() => c.got.some((p) => p.cmd === 'connack'))
  // PUBLISH QoS 1, Remaining Length 3: topic length 1, topic "t", then nothing of its own;
  // then a PINGREQ (0xC0 0x00), whose bytes an unbounded read takes for the packet id.
  c.socket.write(Buffer.from([0x32, 0x03, 0x00, 0x01, 0x74, 0xc0, 0x00]))
  let closed = false
  void c.closed.then(() => { closed = true })
  await c.until(() => closed)
  t.ok(closed, 'the connection is closed')
  t.same(c.got.map((p) => p.cmd), ['connack'], 'neither a PUBACK nor a PINGRESP was sent')
  t.same(published, [], 'nothing was published')
})

t.test('the same PUBLISH with its packet id inside is answered (control)', async (t) => {
  const { port } = await startBareBroker(t)
  const c = await bareClient(t, port, 'good-id')
  await c.until(() => c.got.some((p) => p.cmd === 'connack'))
  c.socket.write(Buffer.from([0x32, 0x05, 0x00, 0x01, 0x74, 0x00, 0x07, 0xc0, 0x00]))
  await c.until(() => c.got.some((p) => p.cmd === 'pingresp') && c.got.some((p) => p.cmd === 'puback'))
  // The PINGRESP may go out first: the PUBACK follows the publish.
  t.same(c.got.map((p) => p.cmd === 'puback' ? `puback ${String(p.messageId)}` : p.cmd).sort(), ['connack', 'pingresp', 'puback 7'])
})
