// mqtt-packet's parser keeps unparsed bytes in a plain buffer list, not in bl's Duplex stream
// (patches/mqtt-packet/0002): one parser per connection, and the stream's two states and
// listeners were ~0.5 KB of every idle connection. Packets split anywhere still parse whole.
// The patched copy (dist/vendor/mqtt-packet) is what aedes uses.
import t from 'tap'
import { createRequire } from 'node:module'
import { join } from 'node:path'

const req = createRequire(join(process.cwd(), 'dist', 'vendor', 'mqtt-packet', 'mqtt.js'))
const mqtt = req('./mqtt.js') as { parser: (o: object) => any; generate: (p: object, o?: object) => Buffer }

t.test('the parser keeps its bytes in a plain buffer list, not a stream', async (t) => {
  const list = mqtt.parser({ protocolVersion: 5 })._list
  t.equal(typeof list.append, 'function', 'a buffer list')
  t.equal(list._readableState, undefined, 'no readable stream state')
  t.equal(list._writableState, undefined, 'no writable stream state')
  t.equal(typeof list.on, 'undefined', 'not an event emitter')
})

t.test('packets cut at every size from 1 byte to all at once parse whole and unchanged', async (t) => {
  const packets = [
    { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'dev-1', keepalive: 60, username: 'alice|123456', password: Buffer.from('secret'), properties: { sessionExpiryInterval: 0 } },
    { cmd: 'publish', topic: 'metrics/alice/Temperatura', payload: Buffer.alloc(70_000, 7), qos: 1, messageId: 9, retain: false, dup: false },
    { cmd: 'subscribe', messageId: 3, subscriptions: [{ topic: 'metrics/alice/#', qos: 1, nl: false, rap: false, rh: 0 }] },
    { cmd: 'pingreq' }
  ]
  const bytes = Buffer.concat(packets.map((p) => mqtt.generate(p, { protocolVersion: 5 })))
  for (const size of [1, 2, 3, 7, 100, 4096, 16_384, bytes.length]) {
    const parser = mqtt.parser({ protocolVersion: 5 })
    const got: any[] = []
    parser.on('packet', (p: any) => got.push(p))
    for (let at = 0; at < bytes.length; at += size) parser.parse(bytes.subarray(at, at + size))
    t.same(got.map((p) => p.cmd), ['connect', 'publish', 'subscribe', 'pingreq'], `cut every ${size} bytes: four packets`)
    t.ok(Buffer.from(got[1].payload).equals(packets[1]?.payload as Buffer), `cut every ${size} bytes: the 70 KB payload intact`)
    t.equal(String(got[0].password), 'secret', `cut every ${size} bytes: the CONNECT intact`)
  }
})
