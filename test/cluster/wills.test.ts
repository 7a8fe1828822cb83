// The sweep of a dead node's wills (src/cluster/wills.ts) on a real redis-server, with two nodes
// sweeping at the very same moment: the atomic claim lets exactly one publish each will.
// test/e2e/cluster-wills.test.ts shows the same with processes killed by SIGKILL.
import t from 'tap'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import type { Aedes } from 'aedes'
import { Aedes as Engine } from '../../src/engine/aedes.js'
import { startClusterEngine, type ClusterEngine } from '../../src/cluster/engine.js'
import { parseCluster } from '../../src/config/cluster.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { Redis } from 'ioredis'

const redis = await startRedisServer()
t.teardown(() => redis.close())

const lines: string[] = []
const log = pino({ level: 'debug' }, new Writable({ write (c: Buffer, _e, cb) { lines.push(c.toString()); cb() } }))
// A heartbeat far away: only the sweeps this test starts run.
const config = (nodeId: string): NonNullable<ReturnType<typeof parseCluster>> =>
  parseCluster({ nodeId, heartbeatInterval: 300, redis: { host: '127.0.0.1', port: redis.port, keyPrefix: 'wills-unit:' } }, '/', {}) as NonNullable<ReturnType<typeof parseCluster>>

async function node (nodeId: string, user?: string): Promise<{ engine: ClusterEngine, broker: Aedes }> {
  const engine = await startClusterEngine(config(nodeId), log)
  const broker = await Engine.createBroker(engine.options) as unknown as Aedes
  // serverWillOf given: this node also sweeps dead nodes' server wills (no client here is owed one).
  engine.wills.start(broker, { userOf: () => user, serverWillOf: () => undefined })
  return { engine, broker }
}
async function stop (n: { engine: ClusterEngine, broker: Aedes }): Promise<void> {
  await new Promise<void>((resolve) => n.broker.close(() => resolve()))
  await n.engine.close()
}

const IDS = Array.from({ length: 20 }, (_, i) => `dev-${i}`)

t.test('two nodes sweeping a dead node\'s wills at the same moment publish each will once', async (t) => {
  // The node that dies: its wills stay in Redis (stored as at CONNECT, with their user).
  const dying = await node('dying', 'alice')
  const persistence = (dying.broker as unknown as { persistence: { putWill (c: object, p: object): Promise<void> } }).persistence
  for (const id of IDS) await persistence.putWill({ id }, { topic: 'metrics/alice/Estado', payload: Buffer.from(id), qos: 1, retain: false })
  await stop(dying)

  const a = await node('a')
  const b = await node('b')
  t.teardown(async () => { await stop(a); await stop(b) })
  const got: string[] = []
  await new Promise<void>((resolve) => a.broker.subscribe('metrics/alice/Estado', (p: any, cb: () => void) => { got.push(p.payload.toString()); cb() }, () => resolve()))
  await new Promise((resolve) => setTimeout(resolve, 200))

  await Promise.all([a.engine.wills.sweep(), b.engine.wills.sweep()])
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.same(got.sort(), [...IDS].sort(), 'each will once')
  const published = lines.map((l) => JSON.parse(l)).filter((l) => l.event === 'will.published')
  t.equal(published.length, IDS.length, 'one will.published line per will, across both nodes')
  t.match(published[0], { user: 'alice', source: 'sweep', topic: 'metrics/alice/Estado' })
  await Promise.all([a.engine.wills.sweep(), b.engine.wills.sweep()])
  t.equal(got.length, IDS.length, 'a second pass finds nothing left')
})

t.test('a dead node\'s server wills: each published once between two sweeping nodes, a device back online skipped, a foreign entry ignored', async (t) => {
  // What a node that died left in Redis (src/cluster/server-wills.ts), written here by hand.
  const raw = new Redis({ host: '127.0.0.1', port: redis.port, keyPrefix: 'wills-unit:' })
  t.teardown(() => raw.disconnect())
  const ghost = 'ghost.00000001'
  for (const id of IDS) await raw.hset(`swill:${ghost}`, `s-${id}`, JSON.stringify({ user: 'bob', topic: 'metrics/bob/Estado', conn: id }))
  await raw.hset(`swill:${ghost}`, 's-back', JSON.stringify({ user: 'bob', topic: 'metrics/bob/Estado', conn: 'x' }))
  await raw.hset(`swill:${ghost}`, 's-junk', '__proto__')
  await raw.sadd('swill:brokers', ghost)

  const a = await node('sa')
  const b = await node('sb')
  t.teardown(async () => { await stop(a); await stop(b) })
  // s-back holds its id on node a again, as bob: it is online, no will is due.
  await raw.set('clientid:held:s-back', `${a.engine.brokerId} bob`)
  const got: Array<Record<string, unknown>> = []
  await new Promise<void>((resolve) => a.broker.subscribe('metrics/bob/Estado', (p: any, cb: () => void) => { got.push(JSON.parse(p.payload.toString())); cb() }, () => resolve()))
  await new Promise((resolve) => setTimeout(resolve, 200))
  lines.length = 0

  await Promise.all([a.engine.wills.sweep(), b.engine.wills.sweep()])
  await new Promise((resolve) => setTimeout(resolve, 500))
  t.same(got.map((p) => p.clientId).sort(), IDS.map((id) => `s-${id}`).sort(), 'each server will once; none for s-back or the junk entry')
  t.match(got[0], { status: 'unsafe_disconnection', at: /^\d{4}-\d\d-\d\dT/ }, 'the server will\'s own shape')
  const logged = lines.map((l) => JSON.parse(l))
  t.equal(logged.filter((l) => l.event === 'will.published' && l.kind === 'server').length, IDS.length, 'one line per server will across both nodes')
  t.match(logged.find((l) => l.event === 'will.dropped' && l.clientId === 's-back'), { reason: 'reconnected', kind: 'server', user: 'bob' })
  t.match(logged.find((l) => l.event === 'will.dropped' && l.clientId === 's-junk'), { reason: 'unknown_user', kind: 'server' })
  t.equal(await raw.exists(`swill:${ghost}`), 0, 'the table is gone')
  t.notOk((await raw.smembers('swill:brokers')).includes(ghost), 'and its broker id with it')
})

t.test('a node stopped cleanly leaves no server will to publish', async (t) => {
  const raw = new Redis({ host: '127.0.0.1', port: redis.port, keyPrefix: 'wills-unit:' })
  t.teardown(() => raw.disconnect())
  const n = await node('clean')
  await raw.hset(`swill:${n.engine.brokerId}`, 'dev', JSON.stringify({ user: 'bob', topic: 'metrics/bob/Estado', conn: 'c' }))
  await raw.sadd('swill:brokers', n.engine.brokerId)
  await stop(n)
  t.equal(await raw.exists(`swill:${n.engine.brokerId}`), 0, 'its table is deleted at close')
  t.notOk((await raw.smembers('swill:brokers')).includes(n.engine.brokerId))
})
