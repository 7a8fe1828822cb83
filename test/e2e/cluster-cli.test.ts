// Two `mqtt-bastion start --config` processes on one redis-server, as an operator runs them:
// QoS 1 from a device on one reaches a subscriber on the other in order; SIGTERM stops each
// cleanly (its Redis connections closed); a Redis that cannot be reached stops the start with
// one line naming it.
import t from 'tap'
import { spawn } from 'node:child_process'
import { createServer } from 'node:net'
import { CLI, cliBrokerFolder, publishAcross } from '../helpers/cli-broker.js'
import { startRedisServer } from '../helpers/redis-server.js'

const redis = await startRedisServer()
t.teardown(() => redis.close())
const folder = await cliBrokerFolder()
t.teardown(() => folder.close())

t.test('a device on node A publishes QoS 1, a subscriber on node B receives every message in order', async (t) => {
  // One config for both processes: the node id defaults to hostname-pid, so each has its own.
  const cfg = folder.config(['cluster:', `  redis: { host: 127.0.0.1, port: ${redis.port} }`])
  await folder.addUser('alice')
  const a = await folder.start(cfg)
  const b = await folder.start(cfg)
  const joinedA = await a.waitFor('cluster.joined')
  const joinedB = await b.waitFor('cluster.joined')
  t.not(joinedA.brokerId, joinedB.brokerId, 'two broker ids')
  t.match(joinedA.node, new RegExp(`-${a.proc.pid}$`), 'node id: hostname-pid')

  const N = 20
  t.same(await publishAcross(a, b, 'alice', N), Array.from({ length: N }, (_, i) => String(i)))

  for (const node of [a, b]) {
    node.proc.kill('SIGTERM')
    const code = await Promise.race([node.exited, new Promise((resolve) => setTimeout(() => resolve('still running after 15 s'), 15_000))])
    t.equal(code, 0, 'SIGTERM: exits 0, nothing left holding it')
  }
})

t.test('a Redis that cannot be reached stops `start` by itself with one line naming host:port', async (t) => {
  const srv = createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as { port: number }).port
  await new Promise((resolve) => srv.close(resolve))
  const cfg = folder.config(['cluster:', `  redis: { host: 127.0.0.1, port: ${port}, connectTimeout: 1000 }`])
  const started = Date.now()
  const child = spawn(process.execPath, [CLI, 'start', '--config', cfg], { cwd: folder.dir, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  // Without the connectTimeout bound ioredis would retry forever: only this kill would end it
  // (exit code null). Generous, for a loaded machine: how long it took is the bench's business.
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  const code = await new Promise((resolve) => child.on('close', resolve))
  clearTimeout(timer)
  t.equal(code, 1, `exited by itself, after ${Date.now() - started} ms`)
  t.match(stderr, new RegExp(`^mqtt-bastion: cluster\\.redis: cannot use Redis at 127\\.0\\.0\\.1:${port}: .*\\n$`))
})
