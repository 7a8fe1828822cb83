// Client ids held across nodes (auth.clientIdBinding none: only the live-session rule, as in
// test/e2e/takeover.test.ts on one node): another user's login with an id held on the other node
// is refused 0x85 / 2, the same user takes it over (0x8E), and the holds live in Redis under the
// prefix with a TTL, so a crashed node's ids come free.
import t from 'tap'
import { join } from 'node:path'
import mqtt, { type MqttClient } from 'mqtt'
import { Redis } from 'ioredis'
import { HOLD_TTL_MS } from '../../src/cluster/client-id-holders.js'
import { events, PASSWORD, pubackCode, startHarness, type Harness } from '../helpers/harness.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { scratch } from '../helpers/scratch.js'

const PREFIX = 'cid-test:'
const redis = await startRedisServer()
t.teardown(() => redis.close())
const users = join(scratch('bastion-cluster-cid-')(), 'users.db')
const db = new Redis({ host: '127.0.0.1', port: redis.port })
t.teardown(() => { db.disconnect() })

async function node (nodeId: string): Promise<Harness> {
  const h = await startHarness({
    auth: { store: { type: 'sqlite', path: users }, workers: 1, totp: { replayProtection: false }, clientIdBinding: 'none' },
    cluster: { nodeId, redis: { host: '127.0.0.1', port: redis.port, keyPrefix: PREFIX } }
  })
  t.teardown(() => h.close())
  return h
}
const a = await node('a')
const b = await node('b')
for (const user of ['alice', 'bob', '__proto__']) b.knowSecret(user, await a.addUser(user))

/** How a connection ended within `ms`: the DISCONNECT reason code, `closed` without one, or `alive`. */
function ending (c: MqttClient, ms = 3000): Promise<number | 'closed' | 'alive'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('alive'), ms)
    c.once('disconnect', (p) => { clearTimeout(timer); resolve(p.reasonCode ?? 0) })
    c.once('close', () => { clearTimeout(timer); setImmediate(() => resolve('closed')) })
  })
}

const heldKey = (id: string): string => `${PREFIX}clientid:held:${id}`

/** Whether the id's hold is gone within 2 s: the node releases it as the socket's close reaches it. */
async function released (id: string): Promise<boolean> {
  for (let i = 0; i < 20; i++) {
    if (await db.exists(heldKey(id)) === 0) return true
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return false
}

t.test('another user cannot take a client id held on the other node: 0x85 / 2, logged, and the holder stays up', async (t) => {
  const first = await a.connect('alice', { clientId: 'shared-1' })
  const ended = ending(first)
  const bob = (v: 4 | 5): Parameters<Harness['refused']>[0] => ({ clientId: 'shared-1', username: `bob|${b.code('bob')}`, password: PASSWORD, protocolVersion: v })
  t.equal(await b.refused(bob(5)), 0x85, 'MQTT 5: Client Identifier not valid')
  t.equal(await b.refused(bob(4)), 2, '3.1.1: identifier rejected')
  t.same(events(b, 'login.failed').filter((e) => e.clientId === 'shared-1').map((e) => [e.reason, e.user]), [['clientid_taken', 'bob'], ['clientid_taken', 'bob']])
  t.equal(await ended, 'alive', 'alice on A got no DISCONNECT')
  t.equal(await pubackCode(first, 'metrics/alice/Estado', 'still here'), 0, 'and still publishes')
  const value = await db.get(heldKey('shared-1'))
  t.match(value, /^a\.[0-9a-f]{8} alice$/, 'held in Redis by node A for alice')
  const ttl = await db.pttl(heldKey('shared-1'))
  t.ok(ttl > 0 && ttl <= HOLD_TTL_MS, `with a TTL (${ttl} ms): a crashed node's ids come free`)
  await first.endAsync()
  t.ok(await released('shared-1'), 'released when the holder disconnects')
  const later = await b.connect('bob', { clientId: 'shared-1' })
  t.equal(later.connected, true, 'then bob takes it on B')
  await later.endAsync()
})

t.test('the same user takes its id over from the other node: the old connection gets 0x8E and the hold moves', async (t) => {
  const old = await a.connect('alice', { clientId: 'own-1' })
  const kicked = ending(old, 15_000)
  const fresh = await b.connect('alice', { clientId: 'own-1' })
  t.equal(await kicked, 0x8E, 'Session taken over')
  t.match(await db.get(heldKey('own-1')), /^b\.[0-9a-f]{8} alice$/, 'now held by B')
  // A's old connection closing must not free what B holds now.
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.equal(await a.refused({ clientId: 'own-1', username: `bob|${a.code('bob')}`, password: PASSWORD }), 0x85, 'bob is refused on A too')
  t.equal(fresh.connected, true)
  await fresh.endAsync()
})

t.test('two logins racing on two nodes for one id as different users: exactly one is accepted', async (t) => {
  const attempt = async (h: Harness, user: string, clientId: string): Promise<MqttClient | undefined> => {
    const c = mqtt.connect({
      host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, connectTimeout: 10000,
      protocolVersion: 5, clientId, username: `${user}|${h.code(user)}`, password: PASSWORD
    })
    return await new Promise((resolve) => {
      const timer = setTimeout(() => { c.end(true); resolve(undefined) }, 10000)
      c.once('connect', () => { clearTimeout(timer); resolve(c) })
      c.once('error', () => { clearTimeout(timer); c.end(true); resolve(undefined) })
    })
  }
  for (let round = 0; round < 5; round++) {
    const clientId = `race-${round}`
    const accepted = (await Promise.all([attempt(a, 'alice', clientId), attempt(b, 'bob', clientId)])).filter((c) => c !== undefined)
    t.equal(accepted.length, 1, `round ${round}: one CONNACK success`)
    await Promise.all(accepted.map(async (c) => await c?.endAsync(true)))
  }
})

t.test('__proto__ as client id and user name is an ordinary id and user', async (t) => {
  const proto = await a.connect('__proto__', { clientId: '__proto__' })
  t.match(await db.get(heldKey('__proto__')), / __proto__$/)
  t.equal(await b.refused({ clientId: '__proto__', username: `bob|${b.code('bob')}`, password: PASSWORD }), 0x85)
  const taken = ending(proto, 15_000)
  const again = await b.connect('__proto__', { clientId: '__proto__' })
  t.equal(await taken, 0x8E)
  await again.endAsync()
  t.ok(await released('__proto__'))
})

t.test('a flood of logins with random client ids across both nodes leaves no hold behind', async (t) => {
  const N = 40
  for (let i = 0; i < N; i++) {
    const h = i % 2 === 0 ? a : b
    const c = await h.connect('bob', { clientId: `rnd-${i}-${Math.random().toString(36).slice(2)}` })
    await c.endAsync()
  }
  // Refused logins (a wrong password) never reach Redis at all.
  for (let i = 0; i < 5; i++) await b.refused({ clientId: `bad-${i}`, username: `bob|${b.code('bob')}`, password: 'wrong password!' })
  let keys: string[] = []
  for (let i = 0; i < 20; i++) {
    keys = await db.keys(`${PREFIX}clientid:*`)
    if (keys.length === 0) break
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  t.same(keys, [], 'every hold released; no owner keys with clientIdBinding none')
})
