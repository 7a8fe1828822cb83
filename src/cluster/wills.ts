// The wills of a crashed node, published by the nodes that survive it (docs/cluster.md, "Wills of
// a crashed node"). aedes' own sweep (aedes.js `_clearWills`) is not used: it authorizes each will
// with the live client of that id on the sweeping node (a device already back online gets its
// old will published; without one our authorizePublish refuses and the sweep stops), and two
// nodes sweeping at once both publish. Here each will is claimed by one atomic script (the node
// that deletes it publishes it), dropped when its device holds its client id again, and
// dropped when its user was disabled or removed since the CONNECT that checked its topic.
import { createRequire } from 'node:module'
import type { Aedes, Client } from 'aedes'
import type { Redis } from 'ioredis'
import type { Logger } from '../log.js'
import type { UserStore } from '../stores/store.js'

const require = createRequire(import.meta.url)
// The codec aedes-persistence-redis stores wills with, resolved from that package.
const msgpack = createRequire(require.resolve('aedes-persistence-redis'))('msgpack-lite') as { decode (b: Buffer): unknown }

/**
 * Written beside a will when it is stored at CONNECT: who logged in, for the revocation check of
 * a node that never saw that connection. aedes-packet copies only the MQTT fields of a will it
 * publishes, so this reaches no subscriber.
 */
export const WILL_USER = 'bastionUser'
// aedes-persistence-redis' names (pinned, 12.0.0): the list of will keys, `will:<brokerId>:<id>`.
const WILLS_LIST = 'will'
// A node is dead after this many heartbeats without one; our own heartbeats must have come back
// for as long, so a node just started, or back from a Redis outage, never judges the others on
// what it did not hear.
const DEAD_AFTER = 3
// Without a node dying, the list is read again this often (heartbeats): wills left by a node that
// died while no one was up, or skipped while the user store did not answer.
const RESWEEP_EVERY = 12
const CONCURRENCY = 8

// KEYS: the list, the will, the client id's hold (clientid-holders.ts); ARGV: the will's key as
// the list has it. Whoever deletes the will publishes it; the hold says who holds the id now.
const CLAIM = `
if redis.call('DEL', KEYS[2]) == 0 then return false end
redis.call('LREM', KEYS[1], 0, ARGV[1])
return redis.call('GET', KEYS[3]) or ''`

interface StoredWill {
  topic: string
  payload?: Buffer
  qos?: 0 | 1 | 2
  retain?: boolean
  properties?: Record<string, unknown>
  clientId: string
  brokerId: string
  [WILL_USER]?: unknown
}
interface Persistence {
  putWill (client: Client, packet: object): Promise<void>
  streamWill (brokers: object): AsyncIterable<unknown>
}
interface ClaimCommand { bastionClaimWill (list: string, key: string, hold: string, entry: string): Promise<string | null> }

export interface WillSweeperOptions {
  /** aedes-persistence-redis, before the broker uses it. */
  persistence: Persistence
  /** Its connection: every key gets the deployment's keyPrefix. */
  db: Redis
  heartbeatMs: number
  log: Logger
}

export interface StartOptions {
  /** The user a live client logged in as. */
  userOf: (client: Client) => string | undefined
  /** Where disabled and removed users are found; absent (an HTTP backend): not re-checked, as live sessions. */
  store?: Pick<UserStore, 'find'>
}

export interface WillSweeper {
  start (broker: Aedes, opts: StartOptions): void
  /** One pass now (tests); resolves when it is done. */
  sweep (): Promise<void>
  close (): void
}

export function createWillSweeper (opts: WillSweeperOptions): WillSweeper {
  const { persistence, db, heartbeatMs, log } = opts
  let userOf: StartOptions['userOf'] = () => undefined
  const putWill = persistence.putWill.bind(persistence)
  persistence.putWill = async (client, packet) => {
    const user = userOf(client)
    await putWill(client, user === undefined ? packet : { ...packet, [WILL_USER]: user })
  }
  // aedes' sweep reads the wills through here: it finds none, so only this module publishes them.
  persistence.streamWill = async function * () {}
  db.defineCommand('bastionClaimWill', { numberOfKeys: 3, lua: CLAIM })

  const lastSeen = new Map<string, number>()
  let broker: Aedes | undefined
  let store: StartOptions['store']
  let selfSince = 0
  let selfLast = 0
  let timer: NodeJS.Timeout | undefined
  let running: Promise<void> | undefined
  let ticks = 0
  let dirty = true
  let closed = false

  function heard (id: string): void {
    const now = Date.now()
    if (broker !== undefined && id === broker.id) {
      if (now - selfLast > 2 * heartbeatMs) selfSince = now
      selfLast = now
    }
    lastSeen.set(id, now)
  }
  /** Whether this node hears its own heartbeats, and has for DEAD_AFTER of them. */
  function listening (now: number): boolean {
    return selfLast > 0 && now - selfLast <= 2 * heartbeatMs && now - selfSince >= DEAD_AFTER * heartbeatMs
  }
  const dead = (id: string, now: number): boolean => id !== broker?.id && !(now - (lastSeen.get(id) ?? 0) <= DEAD_AFTER * heartbeatMs)

  function tick (): void {
    const now = Date.now()
    if (!listening(now)) { dirty = true; return }
    for (const [id, at] of lastSeen) {
      if (now - at > DEAD_AFTER * heartbeatMs) {
        dirty = true
        lastSeen.delete(id)
      }
    }
    if (++ticks % RESWEEP_EVERY === 0) dirty = true
    if (!dirty || running !== undefined) return
    dirty = false
    running = sweepNow().catch((err: Error) => {
      dirty = true
      log.warn({ event: 'will.sweep_failed', reason: err.message }, 'wills of stopped nodes not read: trying again at the next heartbeat')
    }).finally(() => { running = undefined })
  }

  async function sweepNow (): Promise<void> {
    const now = Date.now()
    const keys = (await db.lrange(WILLS_LIST, 0, -1)).filter((k) => dead(k.split(':')[1] ?? '', now))
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < keys.length && !closed) await sweepOne(keys[next++] as string)
    }
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, keys.length) }, worker))
  }

  async function sweepOne (key: string): Promise<void> {
    const raw = await db.getBuffer(key)
    if (raw === null) return
    const will = msgpack.decode(raw) as StoredWill
    const stored = will[WILL_USER]
    const user = typeof stored === 'string' ? stored : undefined
    let refused: 'unknown_user' | 'removed' | 'disabled' | undefined = user === undefined ? 'unknown_user' : undefined
    if (user !== undefined && store !== undefined) {
      let record
      try {
        record = await store.find(user)
      } catch (err) {
        // Neither allow nor drop on a fault: the will stays for the next pass.
        dirty = true
        log.warn({ event: 'will.deferred', clientId: will.clientId, reason: (err as Error).message }, 'will of a stopped node kept: the user store did not answer')
        return
      }
      refused = record === undefined ? 'removed' : !record.enabled ? 'disabled' : undefined
    }
    const hold = await (db as unknown as ClaimCommand).bastionClaimWill(WILLS_LIST, key, `clientid:held:${will.clientId}`, key)
    // Another node claimed it first.
    if (hold === null || closed || broker === undefined) return
    const at = hold.indexOf(' ')
    const back = at > 0 && hold.slice(0, at) !== will.brokerId && hold.slice(at + 1) === user
    const reason = refused ?? (back ? 'reconnected' : undefined)
    const entry = { user, clientId: will.clientId, topic: will.topic, deadBroker: will.brokerId }
    if (reason !== undefined) {
      log.info({ event: 'will.dropped', ...entry, reason }, 'will of a stopped node not published')
      return
    }
    const { willDelayInterval: _, ...properties } = will.properties ?? {}
    const packet = {
      cmd: 'publish' as const,
      topic: will.topic,
      payload: will.payload ?? Buffer.alloc(0),
      qos: will.qos ?? 0,
      retain: will.retain === true,
      dup: false,
      ...(Object.keys(properties).length > 0 ? { properties } : {})
    }
    const b = broker
    await new Promise<void>((resolve) => {
      b.publish(packet, (err) => {
        if (err) log.error({ event: 'will.failed', err, clientId: will.clientId }, 'will of a stopped node not published')
        else log.info({ event: 'will.published', ...entry, source: 'sweep' }, 'will of a stopped node published')
        resolve()
      })
    })
  }

  return {
    start (b, o) {
      broker = b
      userOf = o.userOf
      store = o.store
      const mq = (b as unknown as { mq: { on (topic: string, fn: (p: { payload: Buffer }, cb: () => void) => void): void } }).mq
      const onBeat = (p: { payload: Buffer }, cb: () => void): void => { heard(p.payload.toString()); cb() }
      // A node's birth counts as heard: its first heartbeat comes one interval later.
      mq.on('$SYS/+/heartbeat', onBeat)
      mq.on('$SYS/+/birth', onBeat)
      timer = setInterval(tick, heartbeatMs)
      timer.unref()
      b.once('closed', () => { this.close() })
    },
    async sweep () {
      await running
      await sweepNow()
    },
    close () {
      closed = true
      clearInterval(timer)
    }
  }
}
