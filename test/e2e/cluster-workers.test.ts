// `mqtt-bastion start` with two node:cluster workers on a throwaway redis-server, as an operator
// runs it: TLS logins spread over both worker processes, QoS 1 between them, SIGHUP and SIGTERM
// passed on to each, a worker killed with SIGKILL restarted while the port keeps serving, and
// the refusals: no cluster.redis, a bad --workers value, a worker that cannot start.
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import { CLI, cliBrokerFolder, type CliBroker } from '../helpers/cli-broker.js'
import { startRedisServer } from '../helpers/redis-server.js'

const redis = await startRedisServer()
t.teardown(() => redis.close())
const folder = await cliBrokerFolder()
t.teardown(() => folder.close())
// folder.close() kills the primaries; their workers exit when the primary goes, and are killed
// here anyway in case one does not.
const workerPids = new Set<number>()
t.teardown(() => { for (const pid of workerPids) { try { process.kill(pid, 'SIGKILL') } catch {} } })

const cfg = join(folder.dir, 'bastion.yaml')
/** The folder's config with the SQLite store (shared by the workers) and `cluster` lines. */
function writeConfig (cluster: string[], extra: string[] = []): string {
  writeFileSync(cfg, [
    'listeners:',
    '  - { type: tls, host: 127.0.0.1, port: 0, cert: certs/server.crt, key: certs/server.key }',
    ...extra,
    'auth:',
    '  store: { type: sqlite, path: data/users.db }',
    '  workers: 2',
    // One user logs in 20 times within one 30 s step.
    '  totp: { replayProtection: false }',
    ...cluster,
    ''
  ].join('\n'))
  return cfg
}
// A wss listener and the monitoring port too: servers node:cluster shares, or the primary binds.
const twoWorkers = (): string => writeConfig(['cluster:', '  workers: 2', `  redis: { host: 127.0.0.1, port: ${redis.port} }`,
  'monitoring: { enabled: true, host: 127.0.0.1, port: 0 }'],
['  - { type: wss, host: 127.0.0.1, port: 0, cert: certs/server.crt, key: certs/server.key }'])

async function startWorkers (): Promise<{ b: CliBroker; pids: number[] }> {
  const b = await folder.start(twoWorkers())
  const ready = await b.waitFor('workers.ready', { ms: 30_000 })
  const pids = ready.pids as number[]
  for (const pid of pids) workerPids.add(pid)
  return { b, pids }
}

/** The pid of the worker that logged `clientId` in. */
async function workerOf (b: CliBroker, clientId: string): Promise<number> {
  return (await b.waitFor('login.ok', { match: (l) => l.clientId === clientId })).pid as number
}

const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true } catch { return false } }

async function stopped (b: CliBroker): Promise<number | string> {
  b.proc.kill('SIGTERM')
  return await Promise.race([b.exited, new Promise<string>((resolve) => setTimeout(() => resolve('still running after 20 s'), 20_000))])
}

/** `mqtt-bastion ARGS` to its end: exit code and standard error. */
async function run (args: string[]): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: folder.dir, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  clearTimeout(timer)
  return { code, stderr }
}

await folder.addUser('alice')

t.test('two workers serve one port: TLS logins spread over both, QoS 1 crosses them, SIGHUP reaches each, SIGTERM stops all', async (t) => {
  const { b, pids } = await startWorkers()
  t.equal(pids.length, 2)
  t.not(pids[0], pids[1], 'two worker processes')
  t.notOk(pids.includes(b.proc.pid as number), 'the primary runs no broker')
  const nodes = b.logs.filter((l) => l.event === 'cluster.joined').map((l) => l.node)
  t.same(nodes.map((n: string) => n.replace(/^.*-(w\d)$/, '$1')).sort(), ['w1', 'w2'], 'node ids <nodeId>-w1 and -w2')
  // auth.workers 2 and the default caps (10000, 100 per address) are the host's: halved per worker.
  for (const l of b.logs.filter((l) => l.event === 'broker.starting')) {
    t.match(l, { authWorkers: 1, maxConnections: 5000, maxConnectionsPerIp: 50 }, `worker ${l.worker}: its share`)
  }

  const clients: MqttClient[] = []
  const byPid = new Map<number, string[]>()
  try {
    for (let i = 0; i < 20; i++) {
      const clientId = `alice-dev-${i}`
      clients.push(await b.connect('alice', { clientId }))
      const pid = await workerOf(b, clientId)
      byPid.set(pid, [...(byPid.get(pid) ?? []), clientId])
    }
    t.same([...byPid.keys()].sort(), [...pids].sort(), 'the 20 logins landed on both workers')
    t.ok([...byPid.values()].every((ids) => ids.length >= 5), `spread: ${[...byPid.values()].map((ids) => ids.length).join(' + ')}`)

    // A subscriber on one worker, a publisher on the other.
    const [subId, pubId] = [byPid.get(pids[0] as number)?.[0], byPid.get(pids[1] as number)?.[0]]
    const sub = clients[Number(subId?.split('-').pop())] as MqttClient
    const pub = clients[Number(pubId?.split('-').pop())] as MqttClient
    await sub.subscribeAsync('metrics/alice/#', { qos: 1 })
    const N = 20
    const got: string[] = []
    const all = new Promise<void>((resolve) => {
      sub.on('message', (_topic, payload, packet) => {
        if (packet.qos === 1) got.push(payload.toString())
        if (got.length === N) resolve()
      })
    })
    for (let i = 0; i < N; i++) await pub.publishAsync('metrics/alice/Temperatura', String(i), { qos: 1 })
    await Promise.race([all, new Promise((resolve) => setTimeout(resolve, 10_000))])
    t.same(got, Array.from({ length: N }, (_, i) => String(i)), 'every QoS 1 message, in order, from one worker to the other')
  } finally {
    await Promise.all(clients.map(async (c) => await c.endAsync(true)))
  }

  // wss: the same port on both workers too.
  const ready = b.logs.find((l) => l.event === 'broker.ready') as Record<string, any>
  const wssPort = Number(String(ready.listeners[1]).split(':').pop())
  const wssPids = new Set<number>()
  for (let i = 0; i < 4; i++) {
    const clientId = `alice-web-${i}`
    const c = await b.connect('alice', { clientId, protocol: 'wss', port: wssPort, path: '/mqtt', wsOptions: { servername: 'localhost' } })
    wssPids.add(await workerOf(b, clientId))
    await c.endAsync()
  }
  t.same([...wssPids].sort(), [...pids].sort(), 'wss logins landed on both workers')

  // One monitoring port, served by the primary (cluster-workers-metrics.test.ts: what it serves).
  const monitors = b.logs.filter((l) => l.event === 'listener.started' && l.type === 'monitoring')
  t.same(monitors.map((l) => l.worker), [undefined], 'only the primary binds the monitoring port')
  const url = (b.logs.find((l) => l.event === 'workers.starting') as Record<string, any>).monitoring as string
  const health = await fetch(`${url}/healthz`)
  t.equal(health.status, 200)
  t.match(await (await fetch(`${url}/metrics`)).text(), /bastion_logins_total/)

  const since = b.logs.length
  b.proc.kill('SIGHUP')
  for (const pid of pids) {
    const reloaded = await b.waitFor('broker.reloading', { since, match: (l) => l.pid === pid })
    t.equal(reloaded.signal, 'SIGHUP', `worker ${pid} reloads`)
  }
  t.ok(pids.every(alive), 'SIGHUP kills no worker')

  t.equal(await stopped(b), 0, 'SIGTERM: the primary exits 0')
  t.same(b.logs.filter((l) => l.event === 'broker.stopped').map((l) => l.pid).sort(), [...pids].sort(), 'each worker drained and stopped')
  t.notOk(pids.some(alive), 'no worker left running')
})

t.test('a worker killed with SIGKILL is restarted, and the port keeps serving meanwhile', async (t) => {
  const { b, pids } = await startWorkers()
  const [first, victim] = pids as [number, number]
  const since = b.logs.length
  process.kill(victim, 'SIGKILL')
  const exit = await b.waitFor('worker.exited', { since, match: (l) => l.pid === victim })
  t.equal(exit.signal, 'SIGKILL')
  const c = await b.connect('alice', { clientId: 'alice-during-restart' })
  t.equal(await workerOf(b, 'alice-during-restart'), first, 'the other worker serves meanwhile')
  await c.endAsync()

  const started = await b.waitFor('worker.started', { since, ms: 20_000 })
  const fresh = started.pid as number
  workerPids.add(fresh)
  t.equal(started.worker, exit.worker, 'the same worker slot')
  t.not(fresh, victim, 'a new process')
  // Round robin: of two new connections, one reaches the new worker.
  const seen = new Set<number>()
  for (const clientId of ['alice-after-1', 'alice-after-2']) {
    const client = await b.connect('alice', { clientId })
    seen.add(await workerOf(b, clientId))
    await client.endAsync()
  }
  t.ok(seen.has(fresh), 'the restarted worker serves')
  t.equal(await stopped(b), 0)
  t.notOk(alive(fresh) || alive(first), 'no worker left running')
})

t.test('a second SIGTERM kills a worker that has not stopped, and the primary exits 1', async (t) => {
  const { b, pids } = await startWorkers()
  const [first, stuck] = pids as [number, number]
  // A stopped process keeps its signals pending: it stands for a worker whose drain hangs.
  process.kill(stuck, 'SIGSTOP')
  const since = b.logs.length
  b.proc.kill('SIGTERM')
  t.equal((await b.waitFor('worker.exited', { since, match: (l) => l.pid === first })).exitCode, 0, 'the other worker drains and exits 0')
  t.ok(alive(stuck), 'the stuck one is still there')
  b.proc.kill('SIGTERM')
  await b.waitFor('workers.killed', { since })
  t.equal((await b.waitFor('worker.exited', { since, match: (l) => l.pid === stuck })).signal, 'SIGKILL')
  t.equal(await Promise.race([b.exited, new Promise((resolve) => setTimeout(() => resolve('still running after 10 s'), 10_000))]), 1)
})

t.test('workers that keep dying: 5 restarts within a minute, each after a longer wait, then the primary stops with exit 1', async (t) => {
  const { b, pids } = await startWorkers()
  let since = b.logs.length
  let victim = pids[1] as number
  const waits: number[] = []
  for (let i = 0; i < 5; i++) {
    process.kill(victim, 'SIGKILL')
    waits.push((await b.waitFor('worker.restarting', { since })).inMs as number)
    const started = await b.waitFor('worker.started', { since, ms: 30_000 })
    since = b.logs.indexOf(started) + 1
    victim = started.pid as number
    workerPids.add(victim)
  }
  t.same(waits, [500, 1000, 2000, 4000, 8000], 'the wait doubles')
  process.kill(victim, 'SIGKILL')
  await b.waitFor('workers.restart_limit', { since })
  t.equal(await Promise.race([b.exited, new Promise((resolve) => setTimeout(() => resolve('still running after 20 s'), 20_000))]), 1)
  t.notOk(alive(pids[0] as number), 'the other worker was stopped too')
})

t.test('--workers 2 without cluster.redis is refused with one line naming the key', async (t) => {
  writeConfig([])
  const r = await run(['start', '--workers', '2', '--config', cfg])
  t.equal(r.code, 1)
  t.match(r.stderr, /^mqtt-bastion: --workers 2 needs cluster\.redis in the config [^\n]*\n$/)
})

t.test('a bad --workers value is a usage error that names the flag', async (t) => {
  twoWorkers()
  for (const bad of ['two', '0', '-1', '1.5', '500']) {
    // --workers=VALUE: parseArgs itself refuses a separate value that starts with '-'.
    const r = await run(['start', `--workers=${bad}`, '--config', cfg])
    t.equal(r.code, 2, `--workers ${bad}`)
    t.equal(r.stderr, `mqtt-bastion start: --workers must be a whole number from 1 to 128 or auto, got "${bad}" (see mqtt-bastion start --help)\n`)
  }
  writeConfig(['cluster:', '  workers: many', `  redis: { host: 127.0.0.1, port: ${redis.port} }`])
  const r = await run(['start', '--config', cfg])
  t.equal(r.code, 1)
  t.match(r.stderr, /^mqtt-bastion: config cluster\.workers: must be a whole number from 1 to 128 or auto, got "many"\n$/)
})

t.test('a worker that cannot start stops the primary with that worker\'s line, once, and exit 1', async (t) => {
  const srv = createServer()
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as { port: number }).port
  await new Promise((resolve) => srv.close(resolve))
  writeConfig(['cluster:', `  redis: { host: 127.0.0.1, port: ${port}, connectTimeout: 1000 }`])
  const started = Date.now()
  const r = await run(['start', '--workers', '2', '--config', cfg])
  t.equal(r.code, 1)
  t.match(r.stderr, new RegExp(`^mqtt-bastion: cluster\\.redis: cannot use Redis at 127\\.0\\.0\\.1:${port}: [^\\n]*\\n$`))
  t.ok(Date.now() - started < 15_000, `exited in ${Date.now() - started} ms, not restarting`)
})

t.test('a listening port another program holds stops the primary with the worker\'s line naming it, exit 1', async (t) => {
  const holder = createServer()
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { holder.close() })
  const port = (holder.address() as { port: number }).port
  writeFileSync(cfg, readFileSync(twoWorkers(), 'utf8').replace('port: 0, cert', `port: ${port}, cert`))
  const r = await run(['start', '--config', cfg])
  t.equal(r.code, 1)
  t.match(r.stderr, new RegExp(`^mqtt-bastion: cannot listen on 127\\.0\\.0\\.1:${port} \\(tls\\): EADDRINUSE[^\\n]*\\n$`))
})
