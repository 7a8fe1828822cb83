// The wills of a crashed node, published by the nodes that survive it (docs/cluster.md, "Wills of
// a crashed node"). aedes' own sweep (aedes.js `_clearWills`) is not used: it authorizes each will
// with the live client of that id on the sweeping node (a device already back online gets its
// old will published; without one our authorizePublish refuses and the sweep stops), and two
// nodes sweeping at once both publish. Here each will is claimed by one atomic script (the node
// that deletes it publishes it), dropped when its device holds its client id again, and
// dropped when its user was disabled or removed since the CONNECT that checked its topic.
import { createRequire } from 'node:module'
import type { Aedes, Client, PublishPacket } from 'aedes'
import type { Redis } from 'ioredis'
import type { Logger } from '../log.js'
import { createLogGate } from '../log-gate.js'
import type { UserStore } from '../stores/store.js'
import { serverWillPacket } from '../auth/server-will.js'
import { createServerWillTable, type ClaimedServerWill } from './server-wills.js'

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
  /** This node's aedes broker id. */
  brokerId: string
  heartbeatMs: number
  log: Logger
}

export interface StartOptions {
  /** The user a live client logged in as. */
  userOf: (client: Client) => string | undefined
  /** Where disabled and removed users are found; absent (an HTTP backend): not re-checked, as live sessions. */
  store?: Pick<UserStore, 'find'>
  /**
   * The server will a live client is owed if it drops (will.serverWill, for a client that set no
   * will); undefined: none. Given, a crashed node's devices get theirs from the sweep.
   */
  serverWillOf?: (client: Client) => { user: string; topic: string } | undefined
}

export interface WillSweeper {
  start (broker: Aedes, opts: StartOptions): void
  /** One pass now (tests); resolves when it is done. */
  sweep (): Promise<void>
  /** Stops sweeping; after a clean shutdown (`cleanly`), deletes the server wills this node kept. */
  close (cleanly?: boolean): Promise<void>
}

export function createWillSweeper (opts: WillSweeperOptions): WillSweeper {
  const { persistence, db, brokerId, heartbeatMs, log } = opts
  let userOf: StartOptions['userOf'] = () => undefined
  const putWill = persistence.putWill.bind(persistence)
  persistence.putWill = async (client, packet) => {
    const user = userOf(client)
    await putWill(client, user === undefined ? packet : { ...packet, [WILL_USER]: user })
  }
  // aedes' sweep reads the wills through here: it finds none, so only this module publishes them.
  persistence.streamWill = async function * () {}
  db.defineCommand('bastionClaimWill', { numberOfKeys: 3, lua: CLAIM })
  // A write that fails leaves at worst a server will unpublished or one for a device that left
  // cleanly: logged once a minute (the connection logs the outage itself).
  const entryLines = createLogGate()
  const serverWills = createServerWillTable(db, brokerId, (err) => {
    const open = entryLines.pass('server_entry')
    if (open !== undefined) log.warn({ event: 'will.server_entry_failed', reason: err.message, ...(open.suppressed > 0 ? { suppressed: open.suppressed } : {}) }, 'server will entry not written to Redis')
  })

  const lastSeen = new Map<string, number>()
  let broker: Aedes | undefined
  let store: StartOptions['store']
  let serverWillOf: StartOptions['serverWillOf']
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
    await bounded(keys, sweepOne)
    if (serverWillOf === undefined) return
    for (const id of (await serverWills.brokers()).filter((b) => dead(b, now))) {
      await bounded(await serverWills.clientIds(id), async (clientId) => { await sweepServerWill(id, clientId) })
      if (!closed) await serverWills.retireIfEmpty(id)
    }
  }

  /** `fn` over `items`, CONCURRENCY at a time, until done or closed. */
  async function bounded (items: string[], fn: (item: string) => Promise<void>): Promise<void> {
    let next = 0
    const lane = async (): Promise<void> => {
      while (next < items.length && !closed) await fn(items[next++] as string)
    }
    await Promise.all(Array.from({ length: Math.min(CONCURRENCY, items.length) }, lane))
  }

  /** Why a will of `user` for `clientId` is not published; undefined: it is. */
  async function refusal (user: string | undefined, clientId: string): Promise<'unknown_user' | 'removed' | 'disabled' | 'deferred' | undefined> {
    if (user === undefined) return 'unknown_user'
    if (store === undefined) return undefined
    try {
      const record = await store.find(user)
      return record === undefined ? 'removed' : !record.enabled ? 'disabled' : undefined
    } catch (err) {
      // Neither allow nor drop on a fault: the will stays for the next pass.
      dirty = true
      log.warn({ event: 'will.deferred', clientId, reason: (err as Error).message }, 'will of a stopped node kept: the user store did not answer')
      return 'deferred'
    }
  }

  /** The device holds its id again on a live node, as the same user: it is back online. */
  function back (hold: string, deadBroker: string, user: string | undefined): boolean {
    const at = hold.indexOf(' ')
    return at > 0 && hold.slice(0, at) !== deadBroker && hold.slice(at + 1) === user
  }

  async function publish (packet: PublishPacket, entry: Record<string, unknown>, source: string): Promise<void> {
    const b = broker
    if (b === undefined) return
    await new Promise<void>((resolve) => {
      b.publish(packet, (err) => {
        if (err) log.error({ event: 'will.failed', err, clientId: entry.clientId }, 'will of a stopped node not published')
        else log.info({ event: 'will.published', ...entry, source }, 'will of a stopped node published')
        resolve()
      })
    })
  }

  async function sweepServerWill (deadBroker: string, clientId: string): Promise<void> {
    // The user is checked before the claim, as for a will: a store fault leaves the entry for the
    // next pass. A dead node's table is written by nobody, so what is read here is what is claimed.
    const seen = await serverWills.peek(deadBroker, clientId)
    if (seen === undefined) return
    const refused = await refusal(seen.user, clientId)
    if (refused === 'deferred') return
    const claimed: ClaimedServerWill | undefined = await serverWills.claim(deadBroker, clientId)
    if (claimed === undefined || closed || broker === undefined) return
    const { user, topic } = claimed
    const entry = { user, clientId, topic, deadBroker }
    const reason = refused ?? (topic === undefined ? 'unknown_user' : back(claimed.hold, deadBroker, user) ? 'reconnected' : undefined)
    if (reason !== undefined || topic === undefined) {
      log.info({ event: 'will.dropped', ...entry, reason, kind: 'server' }, 'server will of a stopped node not published')
      return
    }
    await publish(serverWillPacket(topic, clientId), { ...entry, kind: 'server' }, 'sweep')
  }

  async function sweepOne (key: string): Promise<void> {
    const raw = await db.getBuffer(key)
    if (raw === null) return
    const will = msgpack.decode(raw) as StoredWill
    const stored = will[WILL_USER]
    const user = typeof stored === 'string' ? stored : undefined
    const refused = await refusal(user, will.clientId)
    if (refused === 'deferred') return
    const hold = await (db as unknown as ClaimCommand).bastionClaimWill(WILLS_LIST, key, `clientid:held:${will.clientId}`, key)
    // Another node claimed it first.
    if (hold === null || closed || broker === undefined) return
    const reason = refused ?? (back(hold, will.brokerId, user) ? 'reconnected' : undefined)
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
    await publish(packet, entry, 'sweep')
  }

  return {
    start (b, o) {
      broker = b
      userOf = o.userOf
      store = o.store
      serverWillOf = o.serverWillOf
      if (serverWillOf !== undefined) {
        const owed = serverWillOf
        const armed = new WeakMap<Client, { forget (): void }>()
        b.on('client', (client) => {
          const due = owed(client)
          if (due !== undefined) armed.set(client, serverWills.arm(client.id, due.user, due.topic))
        })
        b.on('clientDisconnect', (client) => {
          armed.get(client)?.forget()
          armed.delete(client)
        })
      }
      const mq = (b as unknown as { mq: { on (topic: string, fn: (p: { payload: Buffer }, cb: () => void) => void): void } }).mq
      const onBeat = (p: { payload: Buffer }, cb: () => void): void => { heard(p.payload.toString()); cb() }
      // A node's birth counts as heard: its first heartbeat comes one interval later.
      mq.on('$SYS/+/heartbeat', onBeat)
      mq.on('$SYS/+/birth', onBeat)
      timer = setInterval(tick, heartbeatMs)
      timer.unref()
      b.once('closed', () => { closed = true; clearInterval(timer) })
    },
    async sweep () {
      await running
      await sweepNow()
    },
    async close (cleanly = false) {
      closed = true
      clearInterval(timer)
      if (cleanly && serverWillOf !== undefined) await serverWills.retire()
    }
  }
}
