import type { Client } from 'aedes'
import mqttPacket from 'mqtt-packet'

// MQTT 5 DISCONNECT reason codes sent by the limits.
export const RC_MESSAGE_RATE_TOO_HIGH = 0x96
export const RC_QUOTA_EXCEEDED = 0x97

/** How long a DISCONNECT may wait behind unsent bytes before the socket is cut. */
export const DISCONNECT_GRACE_MS = 5000

/**
 * Tells a v5 client why (3.1.1 has no server DISCONNECT: the socket just closes), then closes
 * the socket after what was already written to it: the answers (SUBACK, PUBACK) to what the
 * client sent before it went over a limit. aedes' own disconnect() destroys the socket, and a
 * 3.1.1 client lost those answers. aedes drops the client when the socket closes; `graceMs`
 * bounds a peer that does not read. `done` runs once the client is closed.
 */
export function disconnectWithin (client: Client, reasonCode: number, graceMs: number, done: () => void = () => {}): void {
  const conn = client.conn
  if (conn.destroyed) {
    client.close(done)
    return
  }
  const timer = setTimeout(() => { conn.destroy() }, graceMs)
  timer.unref()
  conn.once('close', () => {
    clearTimeout(timer)
    client.close(done)
  })
  if (client.version === 5 && client.connected && !conn.writableEnded) {
    conn.write(mqttPacket.generate({ cmd: 'disconnect', reasonCode }, { protocolVersion: 5 }))
  }
  conn.end()
}
