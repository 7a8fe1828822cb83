// The broker engine: aedes 2.0.0-beta.1 with our patch set (patches/aedes/), copied and patched
// into dist/vendor/aedes by scripts/vendor-aedes.mjs at build time. Importing it through
// package.json "imports" (#aedes) instead of `aedes` keeps the fixes wherever this package is
// installed, even where npm hoists or dedupes an unpatched aedes beside it.
import { readFileSync } from 'node:fs'
import type { Aedes as AedesBroker, AedesOptions, Client } from 'aedes'
import type { Packet } from 'mqtt-packet'
import * as patched from '#aedes'

/**
 * Which aedes release the engine is and which of our patches it carries, in order; and the same
 * for the mqtt-packet it parses and writes packets with (patches/mqtt-packet).
 */
export interface EnginePatches {
  readonly aedes: string
  readonly patches: readonly string[]
  readonly mqttPacket: string
  readonly mqttPacketPatches: readonly string[]
}

/** One line for logs: `aedes 2.0.0-beta.1 + 23 patches, mqtt-packet 9.0.2 + 6 patches`. */
export function engineLine (e: EnginePatches): string {
  const n = (k: number): string => `${k} patch${k === 1 ? '' : 'es'}`
  return `aedes ${e.aedes} + ${n(e.patches.length)}, mqtt-packet ${e.mqttPacket} + ${n(e.mqttPacketPatches.length)}`
}

export const ENGINE: EnginePatches = Object.freeze(
  JSON.parse(readFileSync(new URL('patches.json', import.meta.resolve('#aedes')), 'utf8')) as EnginePatches
)

// Typed by the upstream package's declarations (the patches change behaviour, not the API), so
// one set of aedes types serves the whole code base.
export const Aedes = patched.Aedes as unknown as typeof AedesBroker
export type Aedes = AedesBroker

/** Options our patches add (the upstream declarations do not know them). */
export interface PatchOptions {
  /** patches/aedes/0012: every packet, in order, before it is handled; false drops it. */
  screenPacket?: ((client: Client, packet: Packet) => boolean) | null
  /** patches/aedes/0014: a refused 3.1.1 PUBLISH is acknowledged and dropped, or closes the connection. */
  unauthorizedPublishV3?: 'acknowledge' | 'disconnect'
  /** patches/aedes/0021: one of the client's packets has been handled (a PUBLISH answered, a SUBACK written). */
  packetHandled?: ((client: Client) => void) | null
  /** patches/aedes/0023: no session outlives its connection, and a QoS 1/2 PUBLISH is not looked up for offline queueing. */
  ephemeralSessions?: boolean
}

/**
 * How many of the client's packets are being handled (patches/aedes/0021): a PUBLISH until it
 * is answered (PUBACK / PUBREC written, at QoS 0 published, or refused), a SUBSCRIBE until its
 * SUBACK is written, and so on.
 */
export function handlingCount (client: Client): number {
  return (client as unknown as { _handling: number })._handling
}
export type EngineOptions = Partial<AedesOptions> & PatchOptions
