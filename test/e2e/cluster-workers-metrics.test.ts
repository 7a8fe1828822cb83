// `mqtt-bastion start --workers 2` with monitoring on, as an operator runs it (real processes, a
// throwaway redis-server): the primary serves /metrics with both workers' counts summed and
// /healthz for both, through a worker killed with SIGKILL and restarted.
import t from 'tap'
import { X509Certificate } from 'node:crypto'
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import { CLI, cliBrokerFolder } from '../helpers/cli-broker.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { sample } from '../helpers/prometheus.js'

const redis = await startRedisServer()
t.teardown(() => redis.close())
const folder = await cliBrokerFolder()
t.teardown(() => folder.close())
// folder.close() kills the primary; its workers exit with it, and are killed here anyway.
const workerPids = new Set<number>()
t.teardown(() => { for (const pid of workerPids) { try { process.kill(pid, 'SIGKILL') } catch {} } })

const cfg = join(folder.dir, 'bastion.yaml')
/** SQLite (shared by the workers), two workers on Redis, monitoring on `port`. */
const writeConfig = (port: number): void => { writeFileSync(cfg, [
  'listeners:',
  '  - { type: tls, host: 127.0.0.1, port: 0, cert: certs/server.crt, key: certs/server.key }',
  'auth:',
  '  store: { type: sqlite, path: data/users.db }',
  '  workers: 2',
  '  totp: { replayProtection: false }',
  'cluster:',
  '  workers: 2',
  `  redis: { host: 127.0.0.1, port: ${redis.port} }`,
  `monitoring: { enabled: true, host: 127.0.0.1, port: ${port} }`,
  ''
].join('\n')) }
writeConfig(0)
await folder.addUser('alice')

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

async function get (url: string): Promise<{ status: number; body: string }> {
  // Past prom-client's 5 s bound on a worker's answer.
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) })
  return { status: res.status, body: await res.text() }
}

/** Polls `url` until it answers `status`, every 100 ms for at most `ms`; the last answer. */
async function becomes (url: string, status: number, ms: number): Promise<{ status: number; body: string }> {
  const deadline = Date.now() + ms
  let last = await get(url)
  while (last.status !== status && Date.now() < deadline) {
    await sleep(100)
    last = await get(url)
  }
  return last
}

t.test('the primary serves the host: logins and connected clients of both workers summed, /healthz ready only with both up', async (t) => {
  const b = await folder.start(cfg)
  const pids = (await b.waitFor('workers.ready', { ms: 30_000 })).pids as number[]
  for (const pid of pids) workerPids.add(pid)
  const url = (b.logs.find((l) => l.event === 'workers.starting') as Record<string, any>).monitoring as string
  t.match(url, /^http:\/\/127\.0\.0\.1:\d+$/, 'workers.starting names the monitoring address')
  const monitors = b.logs.filter((l) => l.event === 'listener.started' && l.type === 'monitoring')
  t.equal(monitors.length, 1, 'one monitoring listener')
  t.equal(monitors[0]?.pid, undefined, 'bound by the primary (worker lines carry their pid)')
  t.notOk(b.logs.some((l) => l.event === 'worker.started' && 'monitoring' in l), 'no worker serves monitoring')

  // node:cluster hands connections out in turn: at least 4 logins, until both workers have some.
  const clients: MqttClient[] = []
  t.teardown(async () => { await Promise.all(clients.map(async (c) => await c.endAsync(true))) })
  const byPid = new Map<number, number>()
  for (let i = 0; i < 12 && (i < 4 || byPid.size < 2); i++) {
    const clientId = `alice-dev-${i}`
    clients.push(await b.connect('alice', { clientId }))
    const pid = (await b.waitFor('login.ok', { match: (l) => l.clientId === clientId })).pid as number
    byPid.set(pid, (byPid.get(pid) ?? 0) + 1)
  }
  t.same([...byPid.keys()].sort(), [...pids].sort(), `logins on both workers: ${[...byPid.values()].join(' + ')}`)

  const m = await get(`${url}/metrics`)
  t.equal(m.status, 200)
  t.equal(sample(m.body, 'bastion_logins_total', { result: 'ok', reason: 'none' }), clients.length, 'every login counted, not one worker\'s share')
  t.equal(sample(m.body, 'bastion_connected_clients'), clients.length, 'every live connection')
  const port = Number(String((b.logs.find((l) => l.event === 'broker.ready') as Record<string, any>).listeners[0]).split(':').pop())
  const expiry = Math.floor(new Date(new X509Certificate(readFileSync(join(folder.dir, 'certs', 'server.crt'))).validTo).getTime() / 1000)
  t.equal(sample(m.body, 'bastion_certificate_expiry_timestamp_seconds', { listener: `tls://127.0.0.1:${port}` }), expiry, 'the certificate\'s expiry, not a sum of the workers\' readings')
  t.same(await get(`${url}/healthz`), { status: 200, body: 'ok\n' }, 'both workers ready')

  // Worker 2 killed: both endpoints say so at once until it is back.
  const [survivor, victim] = pids as [number, number]
  const since = b.logs.length
  process.kill(victim, 'SIGKILL')
  const down = await becomes(`${url}/healthz`, 503, 5000)
  const during = await get(`${url}/metrics`)
  t.equal(down.status, 503, '/healthz: not ready')
  t.match(down.body, /^worker 2 is not ready \((disconnected|exited, restarting|starting)\)\n$/, down.body.trim())
  t.equal(during.status, 503, '/metrics: no sum without worker 2')
  // Its exit is seen at once, so prom-client's 5 s bound is not what answers here.
  t.match(during.body, /^worker 2 is not ready \([^)]+\)\n$/, during.body.trim())

  workerPids.add((await b.waitFor('worker.started', { since, ms: 20_000 })).pid as number)
  t.same(await becomes(`${url}/healthz`, 200, 5000), { status: 200, body: 'ok\n' }, 'ready again once it is back')
  // The new process counts from 0 (docs/cluster.md: Prometheus reads the drop as a counter reset).
  const after = (await get(`${url}/metrics`)).body
  const kept = byPid.get(survivor) ?? 0
  t.equal(sample(after, 'bastion_logins_total', { result: 'ok', reason: 'none' }), kept, 'the surviving worker\'s logins')
  t.equal(sample(after, 'bastion_connected_clients'), kept, 'its clients; the killed worker\'s are gone')

  b.proc.kill('SIGTERM')
  t.equal(await Promise.race([b.exited, sleep(20_000).then(() => 'still running after 20 s')]), 0, 'SIGTERM: the primary exits 0')
})

t.test('a monitoring port another program holds stops the primary before any worker starts, exit 1', async (t) => {
  const holder = createServer()
  await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { holder.close() })
  const port = (holder.address() as { port: number }).port
  writeConfig(port)
  const child = spawn(process.execPath, [CLI, 'start', '--config', cfg], { cwd: folder.dir, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  clearTimeout(timer)
  t.equal(code, 1)
  t.equal(stderr, `mqtt-bastion: cannot listen on 127.0.0.1:${port} (monitoring): EADDRINUSE\n`)
  t.notMatch(stdout, /worker\.starting/, 'no worker started')
})
