// The cluster engine on a real redis-server: the vendored aedes runs on mqemitter-redis and
// aedes-persistence-redis, an unreachable or refusing Redis is one bounded line, and closing
// leaves no connection behind (this file would not exit otherwise).
import t from 'tap'
import { createServer } from 'node:net'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import { Aedes } from '../../src/engine/aedes.js'
import { startClusterEngine } from '../../src/cluster/engine.js'
import { parseCluster } from '../../src/config/cluster.js'
import { startRedisServer } from '../helpers/redis-server.js'

const PASSWORD = 'redis-Secret-4711'
const redis = await startRedisServer()
t.teardown(() => redis.close())

function capture (): { log: ReturnType<typeof pino>, lines: string[] } {
  const lines: string[] = []
  const log = pino({ level: 'debug' }, new Writable({ write (c: Buffer, _e, cb) { lines.push(c.toString()); cb() } }))
  return { log, lines }
}

const cluster = (redisKeys: Record<string, unknown>, nodeId = 'node-a') =>
  parseCluster({ nodeId, redis: { host: '127.0.0.1', connectTimeout: 1000, ...redisKeys } }, '/', {}) as NonNullable<ReturnType<typeof parseCluster>>

t.test('the redis-server helper stops and starts again on the same port', async (t) => {
  const r = await startRedisServer()
  t.teardown(() => r.close())
  const port = r.port
  await r.stop()
  await r.start()
  t.equal(r.port, port)
  const { log } = capture()
  const engine = await startClusterEngine(cluster({ port }), log)
  await engine.close()
})

t.test('the patched aedes runs on Redis: a retained message stored by one node is served by the other', async (t) => {
  const { log } = capture()
  const a = await startClusterEngine(cluster({ port: redis.port, keyPrefix: 'engine-test:' }, 'a'), log)
  const b = await startClusterEngine(cluster({ port: redis.port, keyPrefix: 'engine-test:' }, 'b'), log)
  const brokerA = await Aedes.createBroker(a.options)
  const brokerB = await Aedes.createBroker(b.options)
  t.equal(brokerA.id, a.brokerId)
  t.match(a.brokerId, /^a\.[0-9a-f]{8}$/, 'the node id and a part new at each start')
  // Routed: a publish on A reaches a listener on B through Redis pub/sub.
  const got = new Promise<string>((resolve) => brokerB.subscribe('x/y', (p: any, cb: () => void) => { resolve(p.payload.toString()); cb() }, () => {}))
  await new Promise((resolve) => setTimeout(resolve, 200))
  await new Promise<void>((resolve) => brokerA.publish({ cmd: 'publish', topic: 'x/y', payload: Buffer.from('hello'), qos: 0, retain: true, dup: false } as any, () => resolve()))
  t.equal(await got, 'hello')
  const retained: any[] = []
  for await (const p of (brokerB as any).persistence.createRetainedStreamCombi(['x/#'])) retained.push(p)
  t.same(retained.map((p) => [p.topic, p.payload.toString()]), [['x/y', 'hello']], 'B reads what A stored')
  for (const [broker, engine] of [[brokerA, a], [brokerB, b]] as const) {
    await new Promise<void>((resolve) => broker.close(() => resolve()))
    await engine.close()
  }
})

t.test('an unreachable Redis stops the start with one line naming host:port, within the connect timeout', async (t) => {
  const srv = createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as { port: number }).port
  await new Promise((resolve) => srv.close(resolve))
  const { log } = capture()
  const started = Date.now()
  const err = await startClusterEngine(cluster({ port }), log).then(() => undefined, (e: any) => e)
  t.equal(err?.code, 'BASTION_ERR_CLUSTER')
  t.match(err?.message, `cluster.redis: cannot use Redis at 127.0.0.1:${port}: `)
  t.notMatch(err?.message, /\n/, 'one line')
  t.ok(Date.now() - started < 2500, `refused in ${Date.now() - started} ms`)
})

t.test('a server that accepts and never answers is given up within the connect timeout', async (t) => {
  const sockets: any[] = []
  const srv = createServer((s) => { sockets.push(s) })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of sockets) s.destroy(); srv.close() })
  const port = (srv.address() as { port: number }).port
  const { log } = capture()
  const started = Date.now()
  const err = await startClusterEngine(cluster({ port }), log).then(() => undefined, (e: any) => e)
  t.equal(err?.code, 'BASTION_ERR_CLUSTER')
  t.match(err?.message, `127.0.0.1:${port}`)
  t.ok(Date.now() - started < 3500, `gave up in ${Date.now() - started} ms`)
})

t.test('a wrong Redis password is refused at start, and the password is in no line', async (t) => {
  const r = await startRedisServer({ password: PASSWORD })
  t.teardown(() => r.close())
  const { log, lines } = capture()
  const err = await startClusterEngine(cluster({ port: r.port, password: 'not-' + PASSWORD }), log).then(() => undefined, (e: any) => e)
  t.equal(err?.code, 'BASTION_ERR_CLUSTER')
  t.match(err?.message, /WRONGPASS|NOAUTH|invalid/i)
  t.notMatch(err?.message, PASSWORD)
  const engine = await startClusterEngine(cluster({ port: r.port, password: PASSWORD }), log)
  await engine.close()
  t.ok(lines.some((l) => l.includes('cluster.joined')))
  t.notMatch(lines.join(''), PASSWORD, 'no log line carries the password')
})

t.test('closing while Redis is down is bounded: the process is not held by a reconnect loop', async (t) => {
  const r = await startRedisServer()
  t.teardown(() => r.close())
  const { log, lines } = capture()
  const engine = await startClusterEngine(cluster({ port: r.port }), log)
  const broker = await Aedes.createBroker(engine.options)
  await r.stop()
  await new Promise((resolve) => setTimeout(resolve, 300))
  const started = Date.now()
  await new Promise<void>((resolve) => broker.close(() => resolve()))
  await engine.close()
  t.ok(Date.now() - started < 6000, `closed in ${Date.now() - started} ms`)
  t.ok(lines.some((l) => l.includes('"event":"redis.error"')), 'the outage was logged')
  t.equal(lines.filter((l) => l.includes('"event":"redis.error"') && l.includes('"role":"publish"')).length, 1, 'once per connection, not per retry')
})

t.test('a burst of publishes reaches Redis in a few reads, not one per message (auto-pipelining)', async (t) => {
  const r = await startRedisServer()
  t.teardown(() => r.close())
  const { log } = capture()
  const engine = await startClusterEngine(cluster({ port: r.port }), log)
  const broker = await Aedes.createBroker(engine.options)
  t.teardown(async () => { await new Promise<void>((resolve) => broker.close(() => resolve())); await engine.close() })
  const conn = engine.redis.open('probe')
  await engine.redis.ready(conn)
  const reads = async (): Promise<number> => Number(/total_reads_processed:(\d+)/.exec(await conn.info('stats'))?.[1])
  const before = await reads()
  const N = 500
  // One turn of the event loop: what a burst of devices' PUBLISHes makes of the emitter.
  await Promise.all(Array.from({ length: N }, async (_, i) => await new Promise<void>((resolve) => {
    broker.publish({ cmd: 'publish', topic: `burst/${i}`, payload: Buffer.from('x'), qos: 0, retain: false, dup: false }, () => resolve())
  })))
  const used = await reads() - before
  t.ok(used < N / 10, `${N} publishes took ${used} reads by Redis (one per message without pipelining)`)
})
