// The cluster's security state on a real redis-server, without brokers: client id holds between
// two nodes (free, same user, another user, released, kept, refreshed after Redis lost them),
// the messages other nodes act on (forged or malformed ones ignored), and the outage signal
// (not for a Redis back within connectTimeout).
import t from 'tap'
import { pino } from 'pino'
import { Redis } from 'ioredis'
import { startClusterState, stateChannels, type ClusterState } from '../../src/cluster/state.js'
import { createRedisConnections } from '../../src/cluster/redis.js'
import { parseCluster } from '../../src/config/cluster.js'
import { startRedisServer } from '../helpers/redis-server.js'

const PREFIX = 'state-test:'
const LOCKOUT = { window: 900, maxFailuresPerUser: 10, maxFailuresPerIp: 50, duration: 60, maxDuration: 3600 }
const redis = await startRedisServer()
t.teardown(() => redis.close())
const log = pino({ level: 'silent' })
const db = new Redis({ host: '127.0.0.1', port: redis.port })
t.teardown(() => { db.disconnect() })
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

async function node (brokerId: string, connectTimeout = 1000): Promise<ClusterState> {
  const config = parseCluster({ nodeId: 'n', redis: { host: '127.0.0.1', port: redis.port, keyPrefix: PREFIX, connectTimeout } }, '/', {})
  if (config === undefined) throw new Error('no config')
  const conns = createRedisConnections(config.redis, log)
  const state = await startClusterState(conns, config, LOCKOUT, brokerId, log)
  t.teardown(async () => { state.close(); await conns.close() })
  return state
}
const a = await node('a.00000001')
const b = await node('b.00000002')

t.test('holds: free or the same user\'s is taken (from any node), another user\'s is refused; release frees only one\'s own', async (t) => {
  t.equal(await a.holders.hold('dev-1', 'alice'), undefined)
  t.equal(await b.holders.hold('dev-1', 'bob'), 'alice', 'another user: refused with the holder\'s name')
  t.equal(await db.get(`${PREFIX}clientid:held:dev-1`), 'a.00000001 alice')
  t.equal(await b.holders.hold('dev-1', 'alice'), undefined, 'the same user from another node takes it')
  a.holders.release('dev-1', 'alice', 0)
  await sleep(50)
  t.equal(await db.get(`${PREFIX}clientid:held:dev-1`), 'b.00000002 alice', 'A\'s late release leaves B\'s hold')
  b.holders.release('dev-1', 'alice', 30)
  await sleep(50)
  const ttl = await db.pttl(`${PREFIX}clientid:held:dev-1`)
  t.ok(ttl > 25_000 && ttl <= 30_000, `a kept session keeps the id for its expiry (${ttl} ms)`)
  t.equal(await a.holders.hold('dev-1', 'bob'), 'alice', 'still alice\'s while her session may be resumed')
})

t.test('refresh writes again a hold Redis lost, and never takes another node\'s', async (t) => {
  t.equal(await a.holders.hold('dev-2', 'carol'), undefined)
  t.equal(await b.holders.hold('dev-3', 'dave'), undefined)
  await db.del(`${PREFIX}clientid:held:dev-2`)
  a.holders.refresh([['dev-2', 'carol'], ['dev-3', 'carol']])
  await sleep(100)
  t.equal(await db.get(`${PREFIX}clientid:held:dev-2`), 'a.00000001 carol')
  t.equal(await db.get(`${PREFIX}clientid:held:dev-3`), 'b.00000002 dave')
})

t.test('forged or malformed lockout and revoke messages are ignored; well-formed ones reach every node', async (t) => {
  const seen: Array<[string, string, number]> = []
  b.lockout.onRemote((scope, key, ms) => seen.push([scope, key, ms]))
  const revoked: string[] = []
  b.onRevoke((user) => revoked.push(user))
  const ch = stateChannels(PREFIX)
  for (const m of ['not json', '{"scope":"admin","key":"1.2.3.4","ms":1000}', '{"scope":"ip","key":"1.2.3.4","ms":999999999}',
    '{"scope":"ip","key":"1.2.3.4","ms":-5}', `{"scope":"ip","key":"${'x'.repeat(300)}","ms":1000}`, '{"scope":"ip","key":1,"ms":1000}', 'x'.repeat(5000)]) {
    await db.publish(ch.lockout, m)
  }
  await db.publish(ch.lockout, '{"scope":"ip","key":"__proto__","ms":1000}')
  for (const u of ['bad name', '', 'x'.repeat(65), '__proto__']) await db.publish(ch.revoke, u)
  await a.revoke('alice')
  await sleep(200)
  t.same(seen, [['ip', '__proto__', 1000]])
  t.same(revoked, ['__proto__', 'alice'])
})

t.test('the outage signal: not for a Redis back within connectTimeout, once for one that stays away', async (t) => {
  const c = await node('c.00000003', 4000)
  let outages = 0
  c.onOutage(() => { outages++ })
  await redis.stop()
  await redis.start()
  await sleep(4500)
  t.equal(outages, 0, 'a restart within connectTimeout drops nobody')
  t.equal(await c.holders.hold('dev-9', 'erin'), undefined, 'and the state answers again')
  await redis.stop()
  await sleep(5000)
  t.equal(outages, 1, 'Redis gone for connectTimeout: one signal')
  const err = await c.holders.hold('dev-10', 'erin').then(() => undefined, (e: any) => e)
  t.equal(err?.code, 'BASTION_ERR_BACKEND_UNAVAILABLE', 'a hold that cannot be asked is a fault, at once')
  await redis.start()
})
