// A client over a rate is disconnected (DISCONNECT 0x96) once every packet it sent before the
// one that tripped the rate has been answered, and nothing follows the DISCONNECT
// [MQTT-3.14.4-1]. So each client's unanswered packets are counted here: publishes being
// authorised, QoS 1/2 publishes being published (aedes writes their PUBACK / PUBREC when
// broker.publish calls back, patches/aedes/0019), and SUBSCRIBE / UNSUBSCRIBE packets whose
// SUBACK / UNSUBACK is still to come.
import type { Aedes, Client, PublishPacket } from 'aedes'
import type { Packet } from 'mqtt-packet'
import { DISCONNECT_GRACE_MS, disconnectWithin, RC_MESSAGE_RATE_TOO_HIGH } from './disconnect.js'
import type { PublishBucket, SubscribeBucket } from './rate.js'

interface Kick { started: boolean; closed: boolean; waiting: Array<() => void> }

export interface RateState {
  publish?: PublishBucket
  subscribe?: SubscribeBucket
  /** Publishes passed on to the auth hooks whose answer is still to come. */
  inflight: number
  /** QoS 1/2 publishes in broker.publish. */
  publishing: number
  /** SUBSCRIBE / UNSUBSCRIBE packets handed to aedes whose SUBACK / UNSUBACK is still to come. */
  subscribing: Set<Packet>
  kicked?: Kick
}

export interface Kicks {
  /** The client's state, made on first use. */
  stateOf: (client: Client) => RateState
  /** The client's state, if it has one. */
  peek: (client: Client) => RateState | undefined
  /**
   * Over a rate: DISCONNECT 0x96 once the packets already passed on have been answered; only
   * then are `waiting` called (they refuse the packets held back). A packet that is never
   * answered holds the DISCONNECT for DISCONNECT_GRACE_MS at most.
   */
  kick: (client: Client, state: RateState, waiting?: Array<() => void>) => void
  /**
   * The auth hooks' answer to a publish counted in `state.inflight`: passes it on to aedes
   * (`done`), which writes a refusal's PUBACK or starts the publish in there.
   */
  authorised: (client: Client, state: RateState, packet: PublishPacket, err: Error | null | undefined, done: (err?: Error | null) => void) => void
  /** Whether the client is being disconnected: nothing more is delivered to it. */
  leaving: (client: Client) => boolean
  /** Listens for the answers aedes gives (SUBACK, UNSUBACK, the end of broker.publish). */
  attach: (broker: Aedes) => void
}

export function createKicks (): Kicks {
  const rates = new WeakMap<Client, RateState>()
  const leavingClients = new WeakSet<Client>()
  // Allowed QoS 2 PUBLISHes not yet in broker.publish: aedes starts it only after the
  // persistence has looked the packet id up. One that never gets there (a duplicate id,
  // answered from the persistence) holds its client's DISCONNECT for the grace period at most.
  const awaitingPublish = new WeakMap<object, RateState>()

  function stateOf (client: Client): RateState {
    let state = rates.get(client)
    if (state === undefined) rates.set(client, state = { inflight: 0, publishing: 0, subscribing: new Set() })
    return state
  }

  function kick (client: Client, state: RateState, waiting: Array<() => void> = []): void {
    const kicked: Kick = { started: false, closed: false, waiting }
    state.kicked = kicked
    const timer = setTimeout(() => { leave(client, kicked) }, DISCONNECT_GRACE_MS)
    timer.unref()
    client.conn.once('close', () => { clearTimeout(timer) })
    // Tripped before the CONNACK (packets sent right behind the CONNECT): 0x96 follows it.
    if (!client.connected && !client.closed) client.once('connected', () => { leaveIfIdle(client, state) })
    else leaveIfIdle(client, state)
  }

  function leaveIfIdle (client: Client, state: RateState): void {
    const kicked = state.kicked
    if (kicked === undefined || state.inflight > 0 || state.publishing > 0 || state.subscribing.size > 0) return
    if (client.connected || client.closed) leave(client, kicked)
  }

  function leave (client: Client, kicked: Kick): void {
    if (kicked.started) return
    kicked.started = true
    leavingClients.add(client)
    disconnectWithin(client, RC_MESSAGE_RATE_TOO_HIGH, DISCONNECT_GRACE_MS, () => {
      kicked.closed = true
      for (const w of kicked.waiting.splice(0)) w()
    })
  }

  function authorised (client: Client, state: RateState, packet: PublishPacket, err: Error | null | undefined, done: (err?: Error | null) => void): void {
    // A QoS 0/1 publish starts inside done, and `publishing` counts it from there.
    const allowedQoS2 = (err === null || err === undefined) && packet.qos === 2
    if (allowedQoS2) awaitingPublish.set(packet, state)
    done(err)
    if (!allowedQoS2 && --state.inflight === 0) leaveIfIdle(client, state)
  }

  /** A SUBSCRIBE / UNSUBSCRIBE answered: aedes emits its filters (the packet's own array) right after the SUBACK / UNSUBACK. */
  function answered (client: Client, filters: unknown): void {
    const state = rates.get(client)
    if (state === undefined) return
    for (const p of state.subscribing) {
      if ((p.cmd === 'subscribe' && p.subscriptions === filters) || (p.cmd === 'unsubscribe' && p.unsubscriptions === filters)) {
        state.subscribing.delete(p)
        leaveIfIdle(client, state)
        return
      }
    }
  }

  /** Counts each client's QoS 1/2 publishes until broker.publish calls back, after aedes has answered. */
  function trackPublishes (broker: Aedes): void {
    type Publish = (packet: PublishPacket, client: Client | null, done?: (err?: Error) => void) => void
    const engine = broker as unknown as { publish: Publish }
    const publish = engine.publish.bind(broker)
    engine.publish = (packet, client, done) => {
      const state = client === null || typeof client === 'function' || packet.qos === 0 ? undefined : rates.get(client)
      if (state === undefined || client === null || typeof done !== 'function') { publish(packet, client, done); return }
      const held = packet.qos === 2 ? awaitingPublish.get(packet) : undefined
      if (held !== undefined) { awaitingPublish.delete(packet); held.inflight-- }
      state.publishing++
      publish(packet, client, (err) => {
        done(err) // aedes writes the PUBACK / PUBREC in here
        if (--state.publishing === 0) leaveIfIdle(client, state)
      })
    }
  }

  return {
    stateOf,
    peek: (client) => rates.get(client),
    kick,
    authorised,
    leaving: (client) => leavingClients.has(client),
    attach (broker) {
      broker.on('subscribe', (subscriptions, client) => { answered(client, subscriptions) })
      broker.on('unsubscribe', (unsubscriptions, client) => { answered(client, unsubscriptions) })
      trackPublishes(broker)
    }
  }
}
