// A QoS 1 PUBLISH is acknowledged once the broker has published it, not before
// (patches/aedes/0019): a PUBACK hands the message over, so one sent ahead of a publish that then
// fails loses the message, where withholding it makes the publisher send it again. A bare aedes
// over plain TCP on 127.0.0.1; the publisher is a raw client, to see exactly what it is sent.
import t from 'tap'
import mqtt from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { startBareBroker } from '../helpers/bare-aedes.js'
import { bareClient, type BareClient } from '../helpers/bare-client.js'

/** An MQTT 3.1.1 client that sends the packets it is given and keeps every packet it reads; connected. */
async function rawClient (t: Tap.Test, port: number, clientId: string): Promise<BareClient> {
  const c = await bareClient(t, port, clientId)
  await c.until(() => c.got.length > 0)
  t.equal(c.got[0]?.cmd, 'connack', `${clientId} connected`)
  return c
}

const publish = (topic: string, messageId: number, retain: boolean): Buffer =>
  mqttPacket.generate({ cmd: 'publish', topic, payload: Buffer.from('m'), qos: 1, messageId, retain, dup: false })

t.test('a QoS 1 PUBLISH the broker fails to publish gets no PUBACK, so its publisher still has it', async (t) => {
  const { broker, port } = await startBareBroker(t)
  const persistence = broker.persistence as unknown as { storeRetained: (p: { topic: string }) => Promise<void> }
  const storeRetained = persistence.storeRetained.bind(persistence)
  persistence.storeRetained = async (p) => {
    if (p.topic === 'fails') throw new Error('retained store unavailable')
    return await storeRetained(p)
  }
  const c = await rawClient(t, port, 'publisher')
  // A publish that succeeds is acknowledged: the client can see PUBACKs.
  c.socket.write(publish('works', 1, true))
  for (let i = 0; i < 100 && !c.got.some((p) => p.cmd === 'puback'); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(c.got.filter((p) => p.cmd === 'puback').map((p) => p.messageId), [1], 'the stored one is acknowledged')

  c.socket.write(publish('fails', 2, true))
  const closed = await Promise.race([c.closed.then(() => true), new Promise<false>((resolve) => setTimeout(() => resolve(false), 2000))])
  t.ok(closed, 'the broker closes the connection on the failed publish')
  t.same(c.got.filter((p) => p.cmd === 'puback').map((p) => p.messageId), [1], 'no PUBACK for message 2, which was not published')
})

t.test('the PUBACK is written after the message is published', async (t) => {
  const { broker, port } = await startBareBroker(t)
  const sub = await mqtt.connectAsync({ host: '127.0.0.1', port, reconnectPeriod: 0, clientId: 'subscriber' })
  t.teardown(() => sub.end(true))
  await sub.subscribeAsync('t', { qos: 1 })

  const order: string[] = []
  broker.on('client', (client) => {
    if (client.id !== 'publisher') return
    const conn = client.conn as unknown as { write: (chunk: unknown, ...rest: unknown[]) => boolean }
    const write = conn.write.bind(conn)
    conn.write = (chunk, ...rest) => {
      if (Buffer.isBuffer(chunk) && chunk[0] === 0x40) order.push('PUBACK written')
      return write(chunk, ...rest)
    }
  })
  // aedes calls its `published` hook once a message has gone through the publish steps.
  broker.published = (packet, client, done) => {
    if (client?.id === 'publisher') order.push('published')
    done(null)
  }
  const received = new Promise<void>((resolve) => sub.once('message', () => resolve()))
  const c = await rawClient(t, port, 'publisher')
  c.socket.write(publish('t', 9, false))
  await received
  for (let i = 0; i < 100 && !c.got.some((p) => p.cmd === 'puback'); i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(order, ['published', 'PUBACK written'], 'published first, then acknowledged')
  t.same(c.got.filter((p) => p.cmd === 'puback').map((p) => p.messageId), [9], 'and the PUBACK arrives')
})
