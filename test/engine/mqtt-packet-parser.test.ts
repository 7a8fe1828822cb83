// mqtt-packet's parser keeps unparsed bytes in its own byte list (patches/mqtt-packet/0002 took
// bl's Duplex stream out: ~0.5 KB of every idle connection; 0004 took bl's BufferList out: a
// Buffer for every byte or number read). Packets split anywhere still parse whole, and the list
// answers every read, slice and consume as bl's BufferList does. The patched copy
// (dist/vendor/mqtt-packet) is what aedes uses.
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

t.test('a PUBLISH is parsed without a Buffer made per byte read: one view, its payload', async (t) => {
  const count = 200
  const one = mqtt.generate({ cmd: 'publish', topic: 'metrics/alice/Temperatura', payload: Buffer.from('21.5'), qos: 1, messageId: 1, retain: false, dup: false })
  const bytes = Buffer.concat(Array.from({ length: count }, () => one))
  const parser = mqtt.parser({ protocolVersion: 4 })
  const got: any[] = []
  parser.on('packet', (p: any) => got.push(p))
  // Every Buffer view (bl's reads and consumes, and a payload) is made by one of these two.
  const proto = Buffer.prototype as any
  const { slice, subarray } = proto
  let views = 0
  proto.slice = function (...a: unknown[]) { views++; return slice.apply(this, a) }
  proto.subarray = function (...a: unknown[]) { views++; return subarray.apply(this, a) }
  try {
    parser.parse(bytes)
  } finally {
    proto.slice = slice
    proto.subarray = subarray
  }
  t.equal(got.length, count, `${count} PUBLISHes`)
  t.ok(got.every((p) => p.topic === 'metrics/alice/Temperatura' && String(p.payload) === '21.5' && p.messageId === 1), 'each whole')
  t.ok(views <= count + 2, `${views} Buffer views for ${count} packets: no more than one each`)
})

t.test('the byte list answers as bl\'s BufferList does: reads in and out of range, slices, strings, consumes', async (t) => {
  const ByteList = req('./byte-list.js') as new () => any
  const BufferList = createRequire(join(process.cwd(), 'package.json'))('bl/BufferList') as new () => any
  let seed = 0x5eed1234
  const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) >>> 0; return (seed >>> 16) % n }
  const outcome = (f: () => unknown): string => {
    try {
      const v = f()
      return Buffer.isBuffer(v) ? `buf:${v.toString('hex')}` : `val:${String(v)}`
    } catch (err) {
      return `throws:${(err as Error).name}`
    }
  }
  let checked = 0
  for (let round = 0; round < 40; round++) {
    const mine = new ByteList()
    const theirs = new BufferList()
    for (let step = 0; step < 400; step++) {
      const op = rand(8)
      if (op === 0 || mine.length === 0) {
        const chunk = Buffer.from(Array.from({ length: 1 + rand(9) }, () => rand(256)))
        mine.append(chunk)
        theirs.append(chunk)
      } else if (op === 1) {
        const n = rand(mine.length + 2)
        mine.consume(n)
        theirs.consume(n)
      } else {
        const len = mine.length as number
        const at = rand(len + 4) - 2 // some before the start, some past the end
        const end = rand(len + 4) - 2
        const [a, b] = op === 2
          ? [() => mine.readUInt8(at), () => theirs.readUInt8(at)]
          : op === 3
            ? [() => mine.readUInt16BE(at), () => theirs.readUInt16BE(at)]
            : op === 4
              ? [() => mine.readUInt32BE(at), () => theirs.readUInt32BE(at)]
              : op === 5
                ? [() => mine.slice(at, end), () => theirs.slice(at, end)]
                : op === 6
                  ? [() => mine.toString('latin1', at, end), () => theirs.toString('latin1', at, end)]
                  : [() => mine.slice(), () => theirs.slice()]
        // A range that ends before it starts: bl counts the end back from its chunk's end and
        // answers with bytes from elsewhere in the chunk; the byte list answers empty.
        const from = at < 0 ? at + len : at
        const to = end < 0 ? end + len : end
        const backwards = (op === 5 || op === 6) && to < from && from < len && to > 0
        const want = backwards ? (op === 5 ? 'buf:' : 'val:') : outcome(b)
        const have = outcome(a)
        if (have !== want) t.fail(`round ${round} step ${step} op ${op} at ${at} end ${end}: ${have}, bl: ${want}`)
        checked++
      }
      if (mine.length !== theirs.length) t.fail(`round ${round} step ${step}: length ${String(mine.length)}, bl: ${String(theirs.length)}`)
    }
  }
  t.ok(checked > 1000, `${checked} answers compared, all alike`)
  // Many small chunks consumed a few bytes at a time: the consumed ones are dropped in batches.
  const mine = new ByteList()
  const theirs = new BufferList()
  for (let i = 0; i < 300; i++) { const b = Buffer.from([i & 0xff]); mine.append(b); theirs.append(b) }
  const seen: string[] = []
  while (theirs.length > 0) {
    seen.push(outcome(() => mine.readUInt16BE(0)) === outcome(() => theirs.readUInt16BE(0)) ? '' : `at ${String(theirs.length)} left`)
    mine.consume(3)
    theirs.consume(3)
  }
  t.same(seen.filter((x) => x !== ''), [], 'reads alike all along 300 one-byte chunks consumed 3 at a time')
  t.equal(mine.length, 0, 'and empty at the end')
})
