// The floor: a measuring stick, not a broker. What any MQTT broker on node:tls costs at the
// least for this bench's loads: Node's TLS server and socket streams, plus the fewest bytes of
// MQTT 3.1.1 the generator needs answered (CONNACK, SUBACK, PUBACK, deliveries, PINGRESP),
// read with the generator's own frame reader. No authentication, no ACL, no session, no packet
// objects, no parser library: every cost it shows is Node's and OpenSSL's, so a goal that this
// relay misses cannot be met by any engine on node:tls. Run as the "floor" kind of run.mjs
// (`--brokers mosquitto,floor,full`); alone: node floor.mjs PORT CERT KEY.
import { readFileSync } from 'node:fs'
import { createServer } from 'node:tls'
import { TYPE, frameReader, writePuback } from './wire.mjs'

const [port, certFile, keyFile] = process.argv.slice(2)

/** filter prefix of `metrics/<user>/#` ('metrics/<user>/') -> its subscribers' sockets. */
const subscribers = new Map()

/** The bench's topics are `<prefix><leaf>` and its filters `<prefix>#`: one lookup per message. */
function prefixOf (topic) { return topic.slice(0, topic.lastIndexOf('/') + 1) }

function connection (socket) {
  socket.setNoDelay(true)
  let nextId = 0
  const filters = []
  socket.nextId = () => { nextId = nextId === 0xffff ? 1 : nextId + 1; return nextId }
  const feed = frameReader((type, flags, body) => {
    if (type === 1) socket.write(Buffer.from([TYPE.CONNACK << 4, 2, 0, 0]))
    else if (type === 3) publish(socket, flags, body)
    else if (type === 8) subscribe(socket, filters, body)
    else if (type === 12) socket.write(Buffer.from([TYPE.PINGRESP << 4, 0]))
    else if (type === 14) socket.end()
    // PUBACK (4) from a subscriber: nothing is kept to release.
  })
  socket.on('data', feed)
  socket.on('error', () => {})
  socket.on('close', () => { for (const f of filters) subscribers.get(f)?.delete(socket) })
}

function subscribe (socket, filters, body) {
  const granted = []
  for (let at = 2; at + 2 < body.length;) {
    const len = (body[at] << 8) | body[at + 1]
    const filter = body.toString('utf8', at + 2, at + 2 + len)
    const qos = body[at + 2 + len] & 3
    at += 3 + len
    const prefix = filter.endsWith('/#') ? filter.slice(0, -1) : filter
    let set = subscribers.get(prefix)
    if (set === undefined) subscribers.set(prefix, set = new Map())
    set.set(socket, qos)
    filters.push(prefix)
    granted.push(qos)
  }
  socket.write(Buffer.from([TYPE.SUBACK << 4, 2 + granted.length, body[0], body[1], ...granted]))
}

function publish (socket, flags, body) {
  const qos = (flags >> 1) & 3
  const topicLen = (body[0] << 8) | body[1]
  if (qos > 0) {
    const ack = Buffer.allocUnsafe(4)
    writePuback(ack, 0, (body[2 + topicLen] << 8) | body[3 + topicLen])
    socket.write(ack)
  }
  const set = subscribers.get(prefixOf(body.toString('latin1', 2, 2 + topicLen)))
  if (set === undefined) return
  for (const [sub, subQos] of set) {
    const q = Math.min(qos, subQos)
    const payloadAt = 2 + topicLen + (qos > 0 ? 2 : 0)
    const rest = 2 + topicLen + (q > 0 ? 2 : 0) + body.length - payloadAt
    const head = rest < 128 ? 2 : 3 // the bench's packets are far below 16 KiB
    const out = Buffer.allocUnsafe(head + rest)
    out[0] = (TYPE.PUBLISH << 4) | (q << 1)
    if (head === 2) out[1] = rest
    else { out[1] = (rest & 0x7f) | 0x80; out[2] = rest >> 7 }
    body.copy(out, head, 0, 2 + topicLen)
    let at = head + 2 + topicLen
    if (q > 0) { const id = sub.nextId(); out[at] = id >> 8; out[at + 1] = id & 0xff; at += 2 }
    body.copy(out, at, payloadAt)
    sub.write(out)
  }
}

const server = createServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), minVersion: 'TLSv1.3' }, connection)
server.listen(Number(port), '127.0.0.1', () => console.log(`floor ready on ${server.address().port}`))
