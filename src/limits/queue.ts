import type { Duplex } from 'node:stream'
import type { Client } from 'aedes'
import mqttPacket from 'mqtt-packet'
import { DISCONNECT_GRACE_MS, RC_QUOTA_EXCEEDED } from './disconnect.js'

/** Node's writable state; `highWaterMark` has no setter (pinned by test/e2e/limits-packets.test.ts). */
interface WritableInternals { _writableState?: { highWaterMark?: number } }
/** Payload waiting for a free slot of the client's Receive Maximum (patches/aedes/0004). */
interface ClientInternals { _outgoingPendingBytes?: number }

export interface QueueGuard {
  /** Prepares a socket about to be handed to aedes. */
  accept (socket: Duplex): void
  /**
   * Whether a delivery may be written to `client` (aedes asks right before each one). False once
   * the bytes waiting for the client passed the limit: it is being disconnected (`onSlow` is told
   * once).
   */
  allow (client: Client): boolean
}

/**
 * Bounds what waits in each client's write buffer at `maxBytes` (plus what one turn of the event
 * loop delivers to it).
 *
 * aedes keeps a delivery's slot in its shared message queue (100 slots for the whole broker)
 * until a write that hit backpressure drains: with Node's 16 KiB mark one subscriber that stops
 * reading stalls delivery to every client until aedes' 60 s drain timeout. So no write to a
 * client socket reports backpressure and aedes never waits; instead the delivery after the
 * buffer passed the limit disconnects the client, and nothing more is written to it.
 */
export function createQueueGuard (maxBytes: number, onSlow: (client: Client, queuedBytes: number) => void): QueueGuard {
  const leaving = new WeakSet<Client>()

  /**
   * The queued data and (MQTT 5) a DISCONNECT 0x97 after it are flushed and the socket closed
   * (aedes' disconnect() would destroy the socket with the data unsent); a peer that does not
   * read for DISCONNECT_GRACE_MS is cut. aedes drops the client when the socket closes.
   */
  function drop (client: Client, queued: number): void {
    leaving.add(client)
    onSlow(client, queued)
    const conn = client.conn
    if (conn.destroyed || conn.writableEnded) return
    if (client.version === 5) conn.write(mqttPacket.generate({ cmd: 'disconnect', reasonCode: RC_QUOTA_EXCEEDED }, { protocolVersion: 5 }))
    conn.end()
    const timer = setTimeout(() => conn.destroy(), DISCONNECT_GRACE_MS)
    timer.unref()
    conn.once('close', () => clearTimeout(timer))
  }

  return {
    accept (socket) {
      const state = (socket as unknown as WritableInternals)._writableState
      if (state !== undefined && typeof state.highWaterMark === 'number') state.highWaterMark = Number.MAX_SAFE_INTEGER
    },
    allow (client) {
      if (leaving.has(client)) return false
      const queued = client.conn.writableLength + ((client as unknown as ClientInternals)._outgoingPendingBytes ?? 0)
      if (queued <= maxBytes) return true
      drop(client, queued)
      return false
    }
  }
}
