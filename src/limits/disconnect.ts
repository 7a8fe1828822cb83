import type { Client } from 'aedes'

// MQTT 5 DISCONNECT reason codes sent by the limits.
export const RC_MESSAGE_RATE_TOO_HIGH = 0x96
export const RC_QUOTA_EXCEEDED = 0x97

/** How long a DISCONNECT may wait behind unsent bytes before the socket is cut. */
export const DISCONNECT_GRACE_MS = 5000

/**
 * Tells a v5 client why (3.1.1 has no server DISCONNECT: the socket just closes), then closes,
 * through aedes' own disconnect(). Client sockets never report backpressure here (queue.ts), so
 * aedes closes right after handing the DISCONNECT to the socket: fine for a publisher, which
 * reads what it is sent. `graceMs` bounds a close that does not complete. `done` runs once the
 * client is closed.
 */
export function disconnectWithin (client: Client, reasonCode: number, graceMs: number, done: () => void = () => {}): void {
  const timer = setTimeout(() => { client.conn.destroy() }, graceMs)
  timer.unref()
  client.disconnect({ reasonCode }, () => {
    clearTimeout(timer)
    done()
  })
}
