// Client id owners (auth.clientIdBinding: owner, the default) in a cluster: kept in Redis for
// every store, so an id bound on node A is refused to another user on node B while the device
// is offline, the CLI lists and releases them there, and one user's random ids stay bounded.
import t from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { events, PASSWORD, startHarness, type Harness } from '../helpers/harness.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { scratch } from '../helpers/scratch.js'

const run = promisify(execFile)
const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
const PREFIX = 'owner-test:'
const redis = await startRedisServer()
t.teardown(() => redis.close())
const folder = scratch('bastion-cluster-owner-')()
const users = join(folder, 'users.db')
const db = new Redis({ host: '127.0.0.1', port: redis.port })
t.teardown(() => { db.disconnect() })

async function node (nodeId: string): Promise<Harness> {
  const h = await startHarness({
    auth: { store: { type: 'sqlite', path: users }, workers: 1, totp: { replayProtection: false } },
    cluster: { nodeId, redis: { host: '127.0.0.1', port: redis.port, keyPrefix: PREFIX } }
  })
  t.teardown(() => h.close())
  return h
}
const a = await node('a')
const b = await node('b')
for (const user of ['sensor-10', 'mallory', 'roamer', '__proto__']) b.knowSecret(user, await a.addUser(user))
const cfg = join(folder, 'cli.yaml')
writeFileSync(cfg, `auth:\n  store: { type: sqlite, path: ${users} }\ncluster:\n  redis: { host: 127.0.0.1, port: ${redis.port}, keyPrefix: '${PREFIX}' }\n`)

t.test('an id bound on A is refused to another user on B while its device is offline: 0x85 / 2, clientid_owned', async (t) => {
  await (await a.connect('sensor-10', { clientId: 'sensor-10-kitchen' })).endAsync()
  t.equal(await db.get(`${PREFIX}clientid:owner:sensor-10-kitchen`), 'sensor-10', 'the binding is in Redis')
  const mallory = (v: 4 | 5): Parameters<Harness['refused']>[0] => ({ clientId: 'sensor-10-kitchen', username: `mallory|${b.code('mallory')}`, password: PASSWORD, protocolVersion: v })
  t.equal(await b.refused(mallory(5)), 0x85)
  t.equal(await b.refused(mallory(4)), 2)
  t.match(events(b, 'login.failed').filter((e) => e.reason === 'clientid_owned'), [{ user: 'mallory', clientId: 'sensor-10-kitchen' }, { user: 'mallory' }])
  const device = await b.connect('sensor-10', { clientId: 'sensor-10-kitchen' })
  t.equal(device.connected, true, 'the device logs in with its id on B')
  await device.endAsync()
})

t.test('the CLI lists and releases bindings in Redis; the next user to log in owns the id', async (t) => {
  await (await a.connect('sensor-10', { clientId: 'pump-3' })).endAsync()
  const listed = await run(process.execPath, [CLI, 'clientid', 'list', 'sensor-10', '--json', '--config', cfg])
  t.match(JSON.parse(listed.stdout), [{ clientId: 'pump-3', user: 'sensor-10' }, { clientId: 'sensor-10-kitchen', user: 'sensor-10' }])
  t.match((await run(process.execPath, [CLI, 'clientid', 'release', 'pump-3', '--config', cfg])).stdout, /released client id pump-3/)
  const again = await run(process.execPath, [CLI, 'clientid', 'release', 'pump-3', '--config', cfg]).catch((err: any) => err)
  t.equal(again.code, 1)
  t.match(again.stderr, /not bound to any user/)
  const c = await b.connect('mallory', { clientId: 'pump-3' })
  t.equal(c.connected, true)
  await c.endAsync()
  t.equal(await a.refused({ username: `sensor-10|${a.code('sensor-10')}`, password: PASSWORD, clientId: 'pump-3' }), 0x85, 'now sensor-10 is the stranger')
})

t.test('one user\'s random ids across both nodes stay bounded in Redis (32), and refused logins write nothing', async (t) => {
  for (let i = 0; i < 40; i++) await (await (i % 2 === 0 ? a : b).connect('roamer', { clientId: `rand-${i}` })).endAsync()
  t.equal(await db.zcard(`${PREFIX}clientid:ids:roamer`), 32)
  const owned = (await db.keys(`${PREFIX}clientid:owner:rand-*`)).length
  t.equal(owned, 32, 'the 32 most recent ids, the older owner keys deleted')
  t.equal(await db.get(`${PREFIX}clientid:owner:rand-0`), null, 'the oldest released')
  const before = await db.dbsize()
  for (let i = 0; i < 5; i++) await b.refused({ clientId: `junk-${i}`, username: `nobody-${i}|123456`, password: PASSWORD, localAddress: '127.0.0.9' })
  // Each refused login may add lockout counters (one per failing key, each with a TTL); no id.
  t.equal((await db.keys(`${PREFIX}clientid:*junk*`)).length, 0)
  t.ok(await db.dbsize() - before <= 6, 'at most the failing keys\' counters')
})

t.test('__proto__ as client id and user name binds like any other', async (t) => {
  await (await a.connect('__proto__', { clientId: '__proto__' })).endAsync()
  t.equal(await db.get(`${PREFIX}clientid:owner:__proto__`), '__proto__')
  t.equal(await b.refused({ clientId: '__proto__', username: `mallory|${b.code('mallory')}`, password: PASSWORD }), 0x85)
  const back = await b.connect('__proto__', { clientId: '__proto__' })
  t.equal(back.connected, true)
  await back.endAsync()
})
