// The wills of a node killed with SIGKILL (src/cluster/wills.ts), with real processes on one
// throwaway Redis and a heartbeat of 1 s: the survivors publish each will once, not the stale
// will of a device already back on another node, and not the will of a user disabled since.
import t from 'tap'
import type { MqttClient } from 'mqtt'
import { cliBrokerFolder, type CliBroker } from '../helpers/cli-broker.js'
import { startRedisServer } from '../helpers/redis-server.js'

const redis = await startRedisServer()
t.teardown(() => redis.close())
const folder = await cliBrokerFolder()
t.teardown(() => folder.close())

const HEARTBEAT_S = 1
// Dead after 3 silent heartbeats, swept at the next one: 4 s; the rest is a loaded machine's.
const WILL_WITHIN_MS = 15_000
// After the first copy, a second one would come from another survivor's pass: 4 heartbeats.
const NO_SECOND_MS = 4 * HEARTBEAT_S * 1000

/** `count` nodes on one keyPrefix (one per test: no test sees another's wills). */
async function nodes (t: { teardown: (fn: () => void) => void }, prefix: string, count: number): Promise<CliBroker[]> {
  const cfg = folder.config(['  recheckInterval: 3600', 'cluster:', `  heartbeatInterval: ${HEARTBEAT_S}`,
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

/** Waits (bounded) until `got` holds something; then `settle` ms more. */
async function arrival (got: string[], within: number, settle: number): Promise<void> {
  const deadline = Date.now() + within
  while (got.length === 0 && Date.now() < deadline) await sleep(100)
  await sleep(settle)
}

const willOf = (user: string): { topic: string, payload: Buffer, qos: 1, retain: false } =>
  ({ topic: `metrics/${user}/Estado`, payload: Buffer.from(`${user} lost`), qos: 1, retain: false })

async function crash (n: CliBroker): Promise<void> {
  n.kill()
  await n.exited
}

t.test('a node killed with SIGKILL: the other node publishes its device\'s will exactly once', async (t) => {
  const [a, b] = await nodes(t, 'wills-two', 2) as [CliBroker, CliBroker]
  await folder.addUser('w1')
  const watcher = await b.connect('w1', { clientId: 'w1-watcher' })
  t.teardown(() => watcher.end(true))
  const got = await watch(watcher, 'metrics/w1/#')
  const device = await a.connect('w1', { clientId: 'w1-sensor', will: willOf('w1') })
  device.on('error', () => {})
  const killedAt = Date.now()
  await crash(a)
  await arrival(got, WILL_WITHIN_MS, NO_SECOND_MS)
  t.same(got, ['w1 lost'], 'the will, once')
  t.ok(Date.now() - killedAt < WILL_WITHIN_MS + NO_SECOND_MS + 1000, 'within the bound')
  t.match(await b.waitFor('will.published', { ms: 1000, match: (l) => l.source === 'sweep' }), { user: 'w1', clientId: 'w1-sensor', topic: 'metrics/w1/Estado' })
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
  const [a, b] = await nodes(t, 'wills-back', 2) as [CliBroker, CliBroker]
  await folder.addUser('w3')
  const watcher = await b.connect('w3', { clientId: 'w3-watcher' })
  t.teardown(() => watcher.end(true))
  const got = await watch(watcher, 'metrics/w3/#')
  const device = await a.connect('w3', { clientId: 'w3-sensor', will: willOf('w3') })
  device.on('error', () => {})
  await crash(a)
  // Back at once, as a device whose connection broke reconnects: long before A counts as dead.
  const back = await b.connect('w3', { clientId: 'w3-sensor', will: willOf('w3') })
  t.teardown(() => back.end(true))
  t.match(await b.waitFor('will.dropped', { ms: WILL_WITHIN_MS }), { clientId: 'w3-sensor', reason: 'reconnected' })
  await sleep(NO_SECOND_MS)
  t.same(got, [], 'no will: the device is online')
  t.equal(back.connected, true)
})

t.test('a user disabled before the node was killed: its device\'s will is not published', async (t) => {
  const [a, b] = await nodes(t, 'wills-off', 2) as [CliBroker, CliBroker]
  await folder.addUser('w4')
  // A watcher of w4's own would be cut by the disable too: the sweep's log lines tell instead.
  const device = await a.connect('w4', { clientId: 'w4-sensor', will: willOf('w4') })
  device.on('error', () => {})
  // A hangs (it cannot end the session when told), the user is disabled, then A dies.
  a.proc.kill('SIGSTOP')
  const r = await folder.cli('user', 'disable', 'w4', '--config', folder.config(['  recheckInterval: 3600', 'cluster:',
    `  heartbeatInterval: ${HEARTBEAT_S}`, `  redis: { host: 127.0.0.1, port: ${redis.port}, keyPrefix: 'wills-off:' }`]))
  t.equal(r.code, 0, r.stderr)
  await crash(a)
  t.match(await b.waitFor('will.dropped', { ms: WILL_WITHIN_MS }), { user: 'w4', clientId: 'w4-sensor', reason: 'disabled' })
  await sleep(NO_SECOND_MS)
  t.same(b.logs.filter((l) => l.event === 'will.published'), [], 'nothing published')
})
