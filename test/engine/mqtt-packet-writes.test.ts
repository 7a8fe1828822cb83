// mqtt-packet's writeToStream sends each packet to the socket in one write (patches/mqtt-packet/
// 0005): the patched copy (dist/vendor/mqtt-packet, what aedes writes with) against the
// unpatched mqtt-packet from npm for the bytes.
import t from 'tap'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import upstream from 'mqtt-packet'

const req = createRequire(join(process.cwd(), 'dist', 'vendor', 'mqtt-packet', 'mqtt.js'))
const mqtt = req('./mqtt.js') as { writeToStream: (p: object, s: NodeJS.WritableStream, o?: object) => boolean }

/** Writes `packet` to a stream and gives each chunk the stream was handed, and the bytes it got. */
async function written (packet: object, protocolVersion: number): Promise<{ chunks: Buffer[]; bytes: Buffer; answer: boolean }> {
  const stream = new PassThrough({ highWaterMark: 1 << 20 })
  const chunks: Buffer[] = []
  const write = stream.write.bind(stream) as (c: Buffer) => boolean
  stream.write = ((c: Buffer) => { chunks.push(c); return write(c) }) as typeof stream.write
  const answer = mqtt.writeToStream(packet, stream, { protocolVersion })
  await new Promise((resolve) => setImmediate(resolve)) // the writer uncorks on the next tick
  return { chunks, bytes: (stream.read() as Buffer | null) ?? Buffer.alloc(0), answer }
}

t.test('each packet is one write, with the bytes the unpatched mqtt-packet generates', async (t) => {
  const packets: Array<[object, number]> = [
    [{ cmd: 'publish', topic: 'metrics/alice/Temperatura', payload: Buffer.from('21.5'), qos: 1, messageId: 7, retain: false, dup: false }, 4],
    [{ cmd: 'publish', topic: 'metrics/alice/Estado', payload: Buffer.from('ok'), qos: 0, retain: true, dup: false }, 4],
    [{ cmd: 'puback', messageId: 7 }, 4],
    [{ cmd: 'connack', returnCode: 0, sessionPresent: false }, 4],
    [{ cmd: 'suback', messageId: 2, granted: [1, 128] }, 4],
    [{ cmd: 'publish', topic: 'metrics/alice/Humedad', payload: Buffer.from('40'), qos: 1, messageId: 9, retain: false, dup: false, properties: { contentType: 'text/plain', userProperties: { unit: '%' } } }, 5],
    [{ cmd: 'puback', messageId: 9, reasonCode: 0x87 }, 5],
    [{ cmd: 'disconnect', reasonCode: 0x96 }, 5]
  ]
  for (const [packet, version] of packets) {
    const { chunks, bytes, answer } = await written(packet, version)
    const name = `${(packet as { cmd: string }).cmd} v${version}`
    t.equal(chunks.length, 1, `${name}: one write`)
    t.ok(bytes.equals(upstream.generate(packet as upstream.Packet, { protocolVersion: version as 4 | 5 })), `${name}: the same bytes`)
    t.equal(answer, true, `${name}: answered true (room in the stream)`)
  }
})

t.test('a large payload follows its head as it is, not copied', async (t) => {
  const payload = Buffer.alloc(70_000, 7)
  const packet = { cmd: 'publish', topic: 'metrics/alice/Temperatura', payload, qos: 1, messageId: 3, retain: false, dup: false }
  const { chunks, bytes } = await written(packet, 4)
  t.equal(chunks.length, 2, 'two writes: the head, then the payload')
  t.equal(chunks[1], payload, 'the payload Buffer itself')
  t.ok(bytes.equals(upstream.generate(packet as upstream.Packet)), 'the same bytes')
})

t.test('a packet the writer refuses sends nothing and destroys the stream with the reason', async (t) => {
  const stream = new PassThrough()
  let reason = ''
  stream.on('error', (err: Error) => { reason = err.message })
  const chunks: unknown[] = []
  const write = stream.write.bind(stream) as (c: unknown) => boolean
  stream.write = ((c: unknown) => { chunks.push(c); return write(c) }) as typeof stream.write
  // A v5 PUBLISH whose properties are out of range.
  const answer = mqtt.writeToStream({ cmd: 'publish', topic: 't', payload: Buffer.from('x'), qos: 0, properties: { payloadFormatIndicator: 'bogus', messageExpiryInterval: -1 } }, stream, { protocolVersion: 5 })
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(answer, false, 'answered false')
  t.same(chunks, [], 'nothing written')
  t.ok(stream.destroyed, 'the stream destroyed')
  t.match(reason, /Invalid/, `with the reason (${reason})`)
})
