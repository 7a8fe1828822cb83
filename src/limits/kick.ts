// A client over a rate is disconnected (DISCONNECT 0x96) once every packet it sent before the
// one that tripped the rate has been answered, and nothing follows the DISCONNECT
// [MQTT-3.14.4-1]. aedes counts each client's packets being handled (a PUBLISH until its PUBACK
// / PUBREC is written or, at QoS 0, it is published; a SUBSCRIBE until its SUBACK) and reports
// each one done (packetHandled, patches/aedes/0021); the PUBLISHes held back here to be refused
// after the DISCONNECT are among those counted, so the others are answered once only they are left.
import type { Client } from 'aedes'
import { handlingCount } from '../engine/aedes.js'
import { DISCONNECT_GRACE_MS, disconnectWithin, RC_MESSAGE_RATE_TOO_HIGH } from './disconnect.js'
import type { PublishBucket, SubscribeBucket } from './rate.js'

interface Kick { started: boolean; closed: boolean; waiting: Array<() => void> }

export interface RateState {
  publish?: PublishBucket
  subscribe?: SubscribeBucket
  kicked?: Kick
}

export interface Kicks {
  /** The client's state, made on first use. */
  stateOf: (client: Client) => RateState
  /** The client's state, if it has one. */
  peek: (client: Client) => RateState | undefined
  /**
   * Over a rate: DISCONNECT 0x96 once the packets already passed on have been answered; only
   * then are `waiting` called (they refuse the PUBLISHes held back, each still being handled).
   * A packet that is never answered holds the DISCONNECT for DISCONNECT_GRACE_MS at most.
   */
  kick: (client: Client, state: RateState, waiting?: Array<() => void>) => void
  /** Whether the client is being disconnected: nothing more is delivered to it. */
  leaving: (client: Client) => boolean
  /** aedes' packetHandled hook: one of the client's packets has been answered. */
  handled: (client: Client) => void
}

export function createKicks (): Kicks {
  const rates = new WeakMap<Client, RateState>()
  const leavingClients = new WeakSet<Client>()

  function stateOf (client: Client): RateState {
    let state = rates.get(client)
    if (state === undefined) rates.set(client, state = {})
    return state
  }

  function kick (client: Client, state: RateState, waiting: Array<() => void> = []): void {
    const kicked: Kick = { started: false, closed: false, waiting }
    state.kicked = kicked
    const timer = setTimeout(() => { leave(client, kicked) }, DISCONNECT_GRACE_MS)
    timer.unref()
    client.conn.once('close', () => { clearTimeout(timer) })
    // Tripped before the CONNACK (packets sent right behind the CONNECT): 0x96 follows it.
    if (!client.connected && !client.closed) client.once('connected', () => { leaveIfIdle(client, kicked) })
    else leaveIfIdle(client, kicked)
  }

  function leaveIfIdle (client: Client, kicked: Kick): void {
    if (kicked.started || handlingCount(client) > kicked.waiting.length) return
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

  return {
    stateOf,
    peek: (client) => rates.get(client),
    kick,
    leaving: (client) => leavingClients.has(client),
    handled (client) {
      const kicked = rates.get(client)?.kicked
      if (kicked !== undefined) leaveIfIdle(client, kicked)
    }
  }
}
