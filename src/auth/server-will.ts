// The server will: what subscribers of a device's branch receive when a logged-in client that
// set no will of its own drops without DISCONNECT (docs/devices.md). One shape wherever it is
// published: by the node that saw the drop (auth/hooks.ts) or, for a crashed node, by the node
// that sweeps its wills (cluster/wills.ts).
import type { PublishPacket } from 'aedes'

export const SERVER_WILL_STATUS = 'unsafe_disconnection'

export function serverWillPacket (topic: string, clientId: string, at: Date = new Date()): PublishPacket {
  const payload = JSON.stringify({ status: SERVER_WILL_STATUS, clientId, at: at.toISOString() })
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 1, retain: false, dup: false }
}
