import type { Aedes, AuthorizePublishHandler, Client, PublishPacket } from 'aedes'
import { handlingCount } from './engine/aedes.js'
import type { Logger } from './log.js'

/** What is still on its way to subscribers; all zero means a stop loses nothing accepted. */
export interface Pending {
  /**
   * Packets from live clients still being handled, PUBLISHes above all (being authorised or
   * routed, until answered), and the broker's own publishes (wills) not yet handed to every subscriber.
   */
  publishes: number
  /** QoS 1/2 messages written to subscribers that have not acknowledged them yet. */
  unacked: number
  /** Connections with outgoing bytes still buffered in this process. */
  unflushed: number
}

export interface DrainTracker {
  pending (): Pending
  /**
   * Stops taking PUBLISHes: one that arrives from now on is held unanswered, so its publisher
   * keeps it and sends it again after reconnecting. Holding it also stops reading from that
   * connection, which a publisher with a flood behind it needs anyway.
   */
  hold (): void
  /** Resolves with what was still pending when the drain ended: all zero, or what `timeoutMs` cut off. */
  drain (timeoutMs: number): Promise<Pending>
}

// aedes keeps no record of QoS 1 deliveries to clean sessions (only persistent ones go through
// persistence), so acknowledgements are counted here: every outgoing QoS 1/2 PUBLISH takes the
// next packet id (client._nextId, 1..65535), and every PUBACK/PUBCOMP ends one.
interface ClientInternals {
  _nextId: number
  _parser: { on: (event: 'packet', fn: (this: ParserInternals, p: { cmd: string }) => void) => void }
  conn: { writableLength?: number }
}
/** aedes points each client's parser back at its client (`parser.client`; its own packet handler reads it). */
interface ParserInternals { client?: Client }
const IDS = 65535
interface AckCount { firstId: number; acks: number }

const POLL_MS = 10

/**
 * Counts what the broker has accepted and not yet delivered, and holds new PUBLISHes once the
 * stop begins. Installed at start: a message acknowledged before the stop began must be counted too.
 */
export function trackDeliveries (broker: Aedes): DrainTracker {
  let holding = false
  // PUBLISHes from live clients are counted by aedes while they are handled, which is until
  // they are answered (patches/aedes/0021); aedes answers (PUBACK, PUBREC) only once the publish
  // is done (patches/aedes/0019), so nothing acknowledged is still on its way in. A PUBLISH held
  // here stays counted there; `held` says how many to leave out. The broker's own publishes
  // (wills, for a client that is gone) are counted here, while broker.publish runs.
  const held = new WeakMap<Client, number>()
  let own = 0
  const acks = new WeakMap<Client, AckCount>()

  const authorize: AuthorizePublishHandler = broker.authorizePublish.bind(broker)
  broker.authorizePublish = (client, packet, callback) => {
    if (holding && client !== null && !client.closed) {
      held.set(client, (held.get(client) ?? 0) + 1)
      return
    }
    authorize(client, packet, callback)
  }

  const publish = broker.publish.bind(broker) as unknown as (p: PublishPacket, c: Client | null, done: (err?: Error) => void) => void
  ;(broker as unknown as { publish: unknown }).publish = (packet: PublishPacket, client: Client | null | ((err?: Error) => void), done?: (err?: Error) => void): void => {
    const cb = typeof client === 'function' ? client : done
    const from = typeof client === 'function' ? null : client
    // A live client's PUBLISH: counted by aedes; straight through, no closure per message.
    if (from !== null && from !== undefined && !from.closed) { publish(packet, from, cb as (err?: Error) => void); return }
    own++
    publish(packet, from ?? null, (err) => {
      own--
      cb?.(err)
    })
  }

  // One listener function for every client's parser (`this`), not a closure per connection.
  function countAck (this: ParserInternals, p: { cmd: string }): void {
    if (p.cmd !== 'puback' && p.cmd !== 'pubcomp') return
    const count = this.client === undefined ? undefined : acks.get(this.client)
    if (count !== undefined) count.acks++
  }
  broker.on('client', (client) => {
    const internals = client as unknown as ClientInternals
    acks.set(client, { firstId: internals._nextId, acks: 0 })
    internals._parser.on('packet', countAck)
  })

  function unacked (client: Client): number {
    const count = acks.get(client)
    if (count === undefined) return 0
    const sent = (((client as unknown as ClientInternals)._nextId - count.firstId) % IDS + IDS) % IDS
    const open = ((sent - count.acks) % IDS + IDS) % IDS
    // More acknowledgements than ids taken: a persistent session's resent messages reuse their
    // ids. Treat as settled rather than wait for acks that never come.
    return open > IDS / 2 ? 0 : open
  }

  function liveClients (): Client[] {
    return Object.values((broker as unknown as { clients: Record<string, Client> }).clients).filter((c) => !c.closed)
  }

  function pending (): Pending {
    let unackedTotal = 0
    let unflushed = 0
    let publishes = own
    for (const client of liveClients()) {
      if (((client.conn as unknown as ClientInternals['conn']).writableLength ?? 0) > 0) unflushed++
      const heldHere = held.get(client) ?? 0
      publishes += Math.max(0, handlingCount(client) - heldHere)
      // A client whose PUBLISH is held is no longer read, so its acknowledgements cannot arrive.
      if (heldHere === 0) unackedTotal += unacked(client)
    }
    return { publishes, unacked: unackedTotal, unflushed }
  }

  return {
    pending,
    hold () { holding = true },
    async drain (timeoutMs) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const now = pending()
        if ((now.publishes === 0 && now.unacked === 0 && now.unflushed === 0) || Date.now() >= deadline) return now
        await new Promise((resolve) => setTimeout(resolve, Math.min(POLL_MS, Math.max(1, deadline - Date.now()))))
      }
    }
  }
}

/**
 * The stop's middle step, between closing the listeners and disconnecting clients: stop taking
 * PUBLISHes, then wait (at most `timeoutSeconds`) until every message already acknowledged to
 * its publisher has reached its subscribers and, at QoS 1/2, been acknowledged by them.
 */
export async function drainDeliveries (tracker: DrainTracker, timeoutSeconds: number, clients: number, log: Logger): Promise<void> {
  if (timeoutSeconds <= 0) return
  tracker.hold()
  const started = Date.now()
  log.info({ event: 'broker.draining', timeout: timeoutSeconds, clients, ...tracker.pending() }, 'draining: delivering accepted messages before disconnecting clients')
  const left = await tracker.drain(timeoutSeconds * 1000)
  const ms = Date.now() - started
  if (left.publishes === 0 && left.unacked === 0 && left.unflushed === 0) {
    log.info({ event: 'broker.drained', ms }, 'every accepted message delivered')
  } else {
    log.warn({ event: 'broker.drain_timeout', ms, ...left }, `drain timed out after ${timeoutSeconds} s; undelivered messages are lost`)
  }
}
