// The wills of a node killed with SIGKILL (src/cluster/wills.ts), with real processes on one
// throwaway Redis and a heartbeat of 1 s: the survivors publish each will once, not the stale
// will of a device already back on another node, and not the will of a user disabled since.
import t from 'tap'
import type { MqttClient } from 'mqtt'
import { cliBrokerFolder, type CliBroker } from '../helpers/cli-broker.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { Redis } from 'ioredis'

const redis = await startRedisServer()
t.teardown(() => redis.close())
const folder = await cliBrokerFolder()
t.teardown(() => folder.close())

const HEARTBEAT_S = 1
// Dead after 3 silent heartbeats, swept at the next one: 4 s; the rest is a loaded machine's.
const WILL_WITHIN_MS = 15_000
// After the first copy, a second one would come from another survivor's pass: 4 heartbeats.
const NO_SECOND_MS = 4 * HEARTBEAT_S * 1000

// Where a step must be done before the survivors count the node as dead (a device back first, a
// user disabled while the node hung): 5 s heartbeats, so 15 s and more of room on a loaded machine
// instead of 3 s; the sweep then comes within about 20 s.
const SLOW_HEARTBEAT_S = 5
const SLOW_WILL_WITHIN_MS = 40_000
const SLOW_NO_SECOND_MS = 5000

/** `count` nodes on one keyPrefix (one per test: no test sees another's wills). */
async function nodes (t: { teardown: (fn: () => void) => void }, prefix: string, count: number, heartbeat = HEARTBEAT_S): Promise<CliBroker[]> {
  const cfg = folder.config(['  recheckInterval: 3600', 'cluster:', `  heartbeatInterval: ${heartbeat}`,
    `  redis: { host: 127.0.0.1, port: ${redis.port}, keyPrefix: '${prefix}:' }`])
  const started: CliBroker[] = []
  t.teardown(() => { for (const n of started) n.kill() })
  for (let i = 0; i < count; i++) started.push(await folder.start(cfg))
  return started
}

/** Collects the payloads arriving on `c`'s subscription `filter` from now on. */
async function watch (c: MqttClient, filter: string): Promise<string[]> {
  const got: string[] = []
  c.on('message', (_topic, payload) => { got.push(payload.toString()) })
  await c.subscribeAsync(filter, { qos: 1 })
  return got
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** Waits (bounded) until `got` holds `count` things; then `settle` ms more. */
async function arrival (got: string[], within: number, settle: number, count = 1): Promise<void> {
  const deadline = Date.now() + within
  while (got.length < count && Date.now() < deadline) await sleep(100)
  await sleep(settle)
}

/** The client ids node `n` keeps a server will entry for in Redis (src/cluster/server-wills.ts). */
async function serverWillEntries (n: CliBroker, prefix: string): Promise<string[]> {
  const { brokerId } = await n.waitFor('cluster.joined')
  return (await redisOf(prefix).hkeys(`swill:${brokerId as string}`)).sort()
}

const raws = new Map<string, Redis>()
t.teardown(() => { for (const r of raws.values()) r.disconnect() })
/** A connection to the test's Redis with the nodes' key prefix. */
function redisOf (prefix: string): Redis {
  let r = raws.get(prefix)
  if (r === undefined) raws.set(prefix, r = new Redis({ host: '127.0.0.1', port: redis.port, keyPrefix: `${prefix}:` }))
  return r
}

/** Polls (bounded) until `check` holds. */
async function until (check: () => Promise<boolean>, ms = 5000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) { if (await check()) return true; await sleep(50) }
  return false
}

const willOf = (user: string): { topic: string, payload: Buffer, qos: 1, retain: false } =>
  ({ topic: `metrics/${user}/Estado`, payload: Buffer.from(`${user} lost`), qos: 1, retain: false })

async function crash (n: CliBroker): Promise<void> {
  n.kill()
  await n.exited
}

t.test('a node killed with SIGKILL: the other node publishes its device\'s will, and the server will of one without a will, exactly once', async (t) => {
  const [a, b] = await nodes(t, 'wills-two', 2) as [CliBroker, CliBroker]
  await folder.addUser('w1')
  const watcher = await b.connect('w1', { clientId: 'w1-watcher' })
  t.teardown(() => watcher.end(true))
  const got = await watch(watcher, 'metrics/w1/#')
  const device = await a.connect('w1', { clientId: 'w1-sensor', will: willOf('w1') })
  device.on('error', () => {})
  // Without a will of its own: the server will is owed if it drops, so A keeps an entry.
  const plain = await a.connect('w1', { clientId: 'w1-plain' })
  plain.on('error', () => {})
  // One that leaves with DISCONNECT is owed nothing: its entry goes with it.
  const gone = await a.connect('w1', { clientId: 'w1-gone' })
  t.ok(await until(async () => (await serverWillEntries(a, 'wills-two')).length === 2), 'an entry per device without a will')
  await gone.endAsync()
  t.ok(await until(async () => (await serverWillEntries(a, 'wills-two')).join() === 'w1-plain'), 'a clean DISCONNECT deletes its entry')
  // Taken over on A itself: the new connection's entry stays when the old one ends.
  const before = await redisOf('wills-two').hget(`swill:${(await a.waitFor('cluster.joined')).brokerId as string}`, 'w1-plain')
  const again = await a.connect('w1', { clientId: 'w1-plain' })
  again.on('error', () => {})
  await new Promise((resolve) => { if (plain.connected) plain.once('close', resolve); else resolve(undefined) })
  await sleep(300)
  const after = await redisOf('wills-two').hget(`swill:${(await a.waitFor('cluster.joined')).brokerId as string}`, 'w1-plain')
  t.ok(after !== null && after !== before, 'a local takeover keeps an entry, the new connection\'s')
  // Taken over from B: A's entry goes, B keeps one (and it is B that would owe the server will).
  await a.connect('w1', { clientId: 'w1-moved' })
  t.ok(await until(async () => (await serverWillEntries(a, 'wills-two')).includes('w1-moved')), 'w1-moved owed a server will on A')
  const moved = await b.connect('w1', { clientId: 'w1-moved' })
  t.teardown(() => moved.end(true))
  t.ok(await until(async () => !(await serverWillEntries(a, 'wills-two')).includes('w1-moved')), 'a takeover by another node deletes the old node\'s entry')
  t.ok((await serverWillEntries(b, 'wills-two')).includes('w1-moved'), 'the new node keeps its own')
  const killedAt = Date.now()
  await crash(a)
  await arrival(got, WILL_WITHIN_MS, NO_SECOND_MS, 2)
  t.equal(got.length, 2, 'two messages: the will and one server will')
  t.ok(got.includes('w1 lost'), 'the device\'s own will')
  const server = got.filter((p) => p !== 'w1 lost').map((p) => JSON.parse(p))
  t.match(server, [{ status: 'unsafe_disconnection', clientId: 'w1-plain' }], 'the server will of the device without one; none for the one that left cleanly')
  t.ok(Date.now() - killedAt < WILL_WITHIN_MS + NO_SECOND_MS + 1000, 'within the bound')
  t.match(await b.waitFor('will.published', { ms: 1000, match: (l) => l.source === 'sweep' && l.kind === undefined }), { user: 'w1', clientId: 'w1-sensor', topic: 'metrics/w1/Estado' })
  t.match(await b.waitFor('will.published', { ms: 1000, match: (l) => l.source === 'sweep' && l.kind === 'server' }), { user: 'w1', clientId: 'w1-plain', topic: 'metrics/w1/Estado' })
})

t.test('with two survivors, each will of the killed node is published once between them', async (t) => {
  const [a, b, c] = await nodes(t, 'wills-three', 3) as [CliBroker, CliBroker, CliBroker]
  await folder.addUser('w2')
  const onB = await b.connect('w2', { clientId: 'w2-watch-b' })
  const onC = await c.connect('w2', { clientId: 'w2-watch-c' })
  t.teardown(() => { onB.end(true); onC.end(true) })
  const gotB = await watch(onB, 'metrics/w2/#')
  const gotC = await watch(onC, 'metrics/w2/#')
  const devices = await Promise.all(['w2-s1', 'w2-s2', 'w2-s3'].map(async (id) =>
    await a.connect('w2', { clientId: id, will: { ...willOf('w2'), payload: Buffer.from(id) } })))
  for (const d of devices) d.on('error', () => {})
  await crash(a)
  const deadline = Date.now() + WILL_WITHIN_MS
  while ((gotB.length < 3 || gotC.length < 3) && Date.now() < deadline) await sleep(100)
  await sleep(NO_SECOND_MS)
  t.same(gotB.sort(), ['w2-s1', 'w2-s2', 'w2-s3'], 'the watcher on B: each will once')
  t.same(gotC.sort(), ['w2-s1', 'w2-s2', 'w2-s3'], 'the watcher on C: each will once')
  const published = [b, c].flatMap((n) => n.logs.filter((l) => l.event === 'will.published' && l.source === 'sweep'))
  t.same(published.map((l) => l.clientId).sort(), ['w2-s1', 'w2-s2', 'w2-s3'], 'one will.published line per will across B and C')
})

t.test('a device back on another node before the sweep gets no stale will', async (t) => {
  const [a, b] = await nodes(t, 'wills-back', 2, SLOW_HEARTBEAT_S) as [CliBroker, CliBroker]
  await folder.addUser('w3')
  const watcher = await b.connect('w3', { clientId: 'w3-watcher' })
  t.teardown(() => watcher.end(true))
  const got = await watch(watcher, 'metrics/w3/#')
  const device = await a.connect('w3', { clientId: 'w3-sensor', will: willOf('w3') })
  device.on('error', () => {})
  const plain = await a.connect('w3', { clientId: 'w3-plain' })
  plain.on('error', () => {})
  t.ok(await until(async () => (await serverWillEntries(a, 'wills-back')).join() === 'w3-plain'), 'A owes w3-plain a server will')
  await crash(a)
  // Back at once, as a device whose connection broke reconnects: long before A counts as dead.
  const back = await b.connect('w3', { clientId: 'w3-sensor', will: willOf('w3') })
  const plainBack = await b.connect('w3', { clientId: 'w3-plain' })
  t.teardown(() => { back.end(true); plainBack.end(true) })
  t.match(await b.waitFor('will.dropped', { ms: SLOW_WILL_WITHIN_MS, match: (l) => l.kind === undefined }), { clientId: 'w3-sensor', reason: 'reconnected' })
  t.match(await b.waitFor('will.dropped', { ms: SLOW_WILL_WITHIN_MS, match: (l) => l.kind === 'server' }), { clientId: 'w3-plain', reason: 'reconnected' })
  await sleep(SLOW_NO_SECOND_MS)
  t.same(got, [], 'no will and no server will: both devices are online')
  t.equal(back.connected, true)
})

t.test('a user disabled before the node was killed: its device\'s will is not published', async (t) => {
  const [a, b] = await nodes(t, 'wills-off', 2, SLOW_HEARTBEAT_S) as [CliBroker, CliBroker]
  await folder.addUser('w4')
  // A watcher of w4's own would be cut by the disable too: the sweep's log lines tell instead.
  const device = await a.connect('w4', { clientId: 'w4-sensor', will: willOf('w4') })
  device.on('error', () => {})
  const plain = await a.connect('w4', { clientId: 'w4-plain' })
  plain.on('error', () => {})
  t.ok(await until(async () => (await serverWillEntries(a, 'wills-off')).join() === 'w4-plain'), 'A owes w4-plain a server will')
  // A hangs (it cannot end the session when told), the user is disabled, then A dies.
  a.proc.kill('SIGSTOP')
  const r = await folder.cli('user', 'disable', 'w4', '--config', folder.config(['  recheckInterval: 3600', 'cluster:',
    `  heartbeatInterval: ${SLOW_HEARTBEAT_S}`, `  redis: { host: 127.0.0.1, port: ${redis.port}, keyPrefix: 'wills-off:' }`]))
  t.equal(r.code, 0, r.stderr)
  await crash(a)
  t.match(await b.waitFor('will.dropped', { ms: SLOW_WILL_WITHIN_MS, match: (l) => l.kind === undefined }), { user: 'w4', clientId: 'w4-sensor', reason: 'disabled' })
  t.match(await b.waitFor('will.dropped', { ms: SLOW_WILL_WITHIN_MS, match: (l) => l.kind === 'server' }), { user: 'w4', clientId: 'w4-plain', reason: 'disabled' })
  await sleep(NO_SECOND_MS)
  t.same(b.logs.filter((l) => l.event === 'will.published'), [], 'nothing published')
})
