// Revocation across nodes, with real processes: `user disable` / `user remove` run by the CLI
// against a cluster's config end that user's sessions on every node at once (DISCONNECT 0x98),
// not at the next auth.recheckInterval (an hour here), and leave other users connected.
import t from 'tap'
import type { MqttClient } from 'mqtt'
import { cliBrokerFolder } from '../helpers/cli-broker.js'
import { startRedisServer } from '../helpers/redis-server.js'

const redis = await startRedisServer()
t.teardown(() => redis.close())
const folder = await cliBrokerFolder()
t.teardown(() => folder.close())

/** How a connection ended within `ms`: the DISCONNECT reason code, `closed` without one, or `alive`. */
function ending (c: MqttClient, ms: number): Promise<number | 'closed' | 'alive'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('alive'), ms)
    c.once('disconnect', (p) => { clearTimeout(timer); resolve(p.reasonCode ?? 0) })
    c.once('close', () => { clearTimeout(timer); setImmediate(() => resolve('closed')) })
  })
}

t.test('user disable and user remove with the CLI cut that user on both nodes within seconds, and no one else', async (t) => {
  // The periodic re-check is an hour away: only the cluster's message can end these sessions.
  const cfg = folder.config(['  recheckInterval: 3600', 'cluster:', `  redis: { host: 127.0.0.1, port: ${redis.port}, keyPrefix: 'revoke-test:' }`])
  for (const user of ['off1', 'gone1', 'steady']) await folder.addUser(user)
  const a = await folder.start(cfg)
  const b = await folder.start(cfg)
  t.teardown(() => { a.kill(); b.kill() })
  const steady = await b.connect('steady', { clientId: 'steady-1' })
  let steadyEnd: unknown
  steady.once('disconnect', (p) => { steadyEnd = p.reasonCode })
  steady.once('close', () => { steadyEnd ??= 'closed' })
  for (const [user, verb] of [['off1', 'disable'], ['gone1', 'remove']] as const) {
    const onA = await a.connect(user, { clientId: `${user}-a` })
    const onB = await b.connect(user, { clientId: `${user}-b` })
    // Generous: on a loaded machine the CLI process alone can take seconds to start. Only the
    // cluster's message can end them (the re-check is an hour away), whatever the wait.
    const ends = [ending(onA, 20_000), ending(onB, 20_000)]
    const r = await folder.cli('user', verb, user, '--config', cfg)
    t.equal(r.code, 0, r.stderr)
    t.equal(r.stderr, '', 'the cluster was told')
    t.same(await Promise.all(ends), [0x98, 0x98], `${verb}: DISCONNECT 0x98 on A and on B`)
    const reason = verb === 'disable' ? 'disabled' : 'removed'
    t.match(await b.waitFor('session.revoked', { match: (l) => l.user === user }), { clientId: `${user}-b`, reason })
  }
  t.equal(steadyEnd, undefined, 'another user stays connected')
  t.equal(steady.connected, true)
  await steady.endAsync()
})

t.test('a CLI that cannot reach the cluster\'s Redis still makes the change, and says the nodes see it at their next re-check', async (t) => {
  const cfg = folder.config(['cluster:', '  redis: { host: 127.0.0.1, port: 1, connectTimeout: 500 }'])
  await folder.addUser('late1')
  const r = await folder.cli('user', 'disable', 'late1', '--config', cfg)
  t.equal(r.code, 0)
  t.match(r.stdout, /disabled user late1/)
  t.match(r.stderr, /^mqtt-bastion: the cluster's Redis was not told \(.*127\.0\.0\.1:1.*\): running brokers end late1's sessions at their next re-check \(auth\.recheckInterval\)\n$/)
})
