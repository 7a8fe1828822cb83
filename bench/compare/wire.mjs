// The MQTT bytes the load generator speaks. Rare packets (CONNECT, SUBSCRIBE, DISCONNECT) come
// from mqtt-packet's generator. The hot path does not: mqtt-packet's parser builds an object per
// packet through a buffer list, and at tens of thousands of messages a second on one core that
// would make the generator, not the broker, the bottleneck. So PUBLISH is a template generated
// once by mqtt-packet and copied with its packet id and payload patched in, PUBACK is 4 fixed
// bytes, and incoming bytes are split into packets by a small frame reader that only looks at
// what the bench needs (type, QoS, packet id, payload).
import mqttPacket from 'mqtt-packet'

export const PROTOCOL_VERSION = 4 // MQTT 3.1.1: both brokers' most common client; no properties to parse

export const TYPE = { CONNACK: 2, PUBLISH: 3, PUBACK: 4, SUBACK: 9, PINGRESP: 13, DISCONNECT: 14 }

export function connectPacket ({ clientId, username, password, keepalive = 60 }) {
  return mqttPacket.generate({
    cmd: 'connect', protocolId: 'MQTT', protocolVersion: PROTOCOL_VERSION, clean: true,
    clientId, keepalive, username, password: Buffer.from(password)
  })
}

export function subscribePacket (filter, qos) {
  return mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: filter, qos }] })
}

export const DISCONNECT = mqttPacket.generate({ cmd: 'disconnect' })

/** PUBACK for packet id `id`, written into `out` at `at` (4 bytes). */
export function writePuback (out, at, id) {
  out[at] = 0x40; out[at + 1] = 2; out[at + 2] = id >> 8; out[at + 3] = id & 0xff
}

/**
 * A PUBLISH of `payloadSize` bytes on `topic`, generated once: `write(out, at, id)` copies it
 * into `out` at `at` with the packet id set (QoS > 0) and returns the payload's view for the
 * caller to stamp; `size` is the packet's length.
 */
export function publishTemplate (topic, qos, payloadSize) {
  const template = mqttPacket.generate({
    cmd: 'publish', topic, payload: Buffer.alloc(payloadSize, 0x2e), qos, messageId: qos > 0 ? 1 : undefined, retain: false, dup: false
  })
  const payloadAt = template.length - payloadSize // the payload is the packet's tail
  const idAt = payloadAt - 2 // QoS > 0: the packet id sits just before the payload (3.1.1, no properties)
  return {
    size: template.length,
    write (out, at, id) {
      template.copy(out, at)
      if (qos > 0) { out[at + idAt] = id >> 8; out[at + idAt + 1] = id & 0xff }
      return out.subarray(at + payloadAt, at + template.length)
    }
  }
}

/**
 * Splits a byte stream into MQTT packets and calls `onPacket(type, flags, body)` for each, body
 * being the bytes after the fixed header (a view into the chunk, valid during the call only).
 */
export function frameReader (onPacket) {
  let pending = null
  return function feed (chunk) {
    const buf = pending === null ? chunk : Buffer.concat([pending, chunk])
    pending = null
    let at = 0
    while (at < buf.length) {
      // Fixed header: 1 type/flags byte, then 1-4 bytes of remaining length (7 bits each).
      let len = 0; let mul = 1; let i = at + 1; let complete = false
      for (; i < buf.length && i < at + 5; i++) {
        len += (buf[i] & 0x7f) * mul; mul *= 128
        if ((buf[i] & 0x80) === 0) { complete = true; i++; break }
      }
      if (!complete || i + len > buf.length) break
      onPacket(buf[at] >> 4, buf[at] & 0x0f, buf.subarray(i, i + len))
      at = i + len
    }
    if (at < buf.length) pending = Buffer.from(buf.subarray(at)) // copy: the chunk may be reused
  }
}

/** Splits an incoming PUBLISH body (3.1.1): returns { qos, id, payload }; id 0 at QoS 0. */
export function readPublish (flags, body) {
  const qos = (flags >> 1) & 3
  const topicLen = (body[0] << 8) | body[1]
  let at = 2 + topicLen
  let id = 0
  if (qos > 0) { id = (body[at] << 8) | body[at + 1]; at += 2 }
  return { qos, id, payload: body.subarray(at) }
}
