// Lockout counters across nodes: failures on A and on B count toward one threshold, a lockout
// earned on A holds on B (at login, and before TLS for an address), and the counters in Redis
// stay few, each with a TTL.
import t from 'tap'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { events, PASSWORD, startHarness, type Harness } from '../helpers/harness.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { scratch } from '../helpers/scratch.js'

const PREFIX = 'lockout-test:'
const redis = await startRedisServer()
t.teardown(() => redis.close())
const users = join(scratch('bastion-cluster-lockout-')(), 'users.db')
const db = new Redis({ host: '127.0.0.1', port: redis.port })
t.teardown(() => { db.disconnect() })

async function node (nodeId: string): Promise<Harness> {
  const h = await startHarness({
    auth: {
      store: { type: 'sqlite', path: users },
      workers: 1,
      totp: { replayProtection: false },
      lockout: { maxFailuresPerUser: 3, maxFailuresPerIp: 6, duration: 30, maxDuration: 60 }
    },
    cluster: { nodeId, redis: { host: '127.0.0.1', port: redis.port, keyPrefix: PREFIX } }
  })
  t.teardown(() => h.close())
  return h
}
const a = await node('a')
const b = await node('b')
b.knowSecret('alice', await a.addUser('alice'))

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

t.test('a wrong password behind valid codes on A and B counts toward one threshold; the lockout holds on both', async (t) => {
  // 2 on A, 1 on B: per node neither reaches 3.
  for (const h of [a, a, b]) t.equal(await h.refused({ username: `alice|${h.code('alice')}`, password: 'not the password', localAddress: '127.0.0.3' }), 0x86)
  const started = [...events(a, 'auth.lockout'), ...events(b, 'auth.lockout')]
  t.match(started, [{ scope: 'user', user: 'alice', failures: 3, seconds: 30 }], 'one lockout, logged once, by the node that crossed the threshold')
  const ttl = await db.pttl(`${PREFIX}lockout:user:alice:l`)
  t.ok(ttl > 0 && ttl <= 30_000, `kept in Redis for its 30 s (${ttl} ms left)`)
  // The right credentials, from another address, on the node that did not see the threshold crossed.
  for (const h of [b, a]) {
    t.equal(await h.refused({ username: `alice|${h.code('alice')}`, password: PASSWORD, localAddress: '127.0.0.4' }), 0x86, 'refused like a wrong password')
    t.equal(events(h, 'login.failed').at(-1)?.reason, 'locked_out')
  }
})

t.test('an address that failed on both nodes is locked on both, and closed before TLS on the other node too', async (t) => {
  // Six unknown accounts from one address, three per node: the address' threshold is 6.
  for (let i = 0; i < 6; i++) {
    const h = i % 2 === 0 ? a : b
    t.equal(await h.refused({ username: `nobody-${i}|123456`, password: PASSWORD, localAddress: '127.0.0.7' }), 0x86)
  }
  const started = [...events(a, 'auth.lockout'), ...events(b, 'auth.lockout')].filter((e) => e.scope === 'ip')
  t.match(started, [{ scope: 'ip', remote: '127.0.0.7', failures: 6 }])
  // The node that did not cross it learns of it by the cluster's message (within milliseconds).
  const other = events(a, 'auth.lockout').some((e) => e.scope === 'ip') ? b : a
  for (let i = 0; i < 20 && events(other, 'connection.locked_out').length === 0; i++) {
    await other.refused({ username: `alice|${other.code('alice')}`, password: PASSWORD, localAddress: '127.0.0.7' }).catch(() => undefined)
    await sleep(100)
  }
  t.match(events(other, 'connection.locked_out'), [{ remote: '127.0.0.7' }], 'closed before its TLS handshake')
  const keys = await db.keys(`${PREFIX}lockout:*`)
  t.ok(keys.length <= 12, `few counters in Redis (${keys.length})`)
  for (const k of keys) t.ok(await db.pttl(k) > 0, `${k} expires`)
})

t.test('a flood of random accounts from many addresses across both nodes keeps Redis bounded by the window\'s failing keys', async (t) => {
  const before = (await db.keys(`${PREFIX}*`)).length
  for (let i = 0; i < 20; i++) {
    const h = i % 2 === 0 ? a : b
    await h.refused({ username: `rnd${Math.random().toString(36).slice(2)}|000000`, password: PASSWORD, clientId: `x${i}`, localAddress: `127.0.1.${i + 1}` })
  }
  // Each failure: one account-from-address counter and one address counter, nothing else.
  const after = (await db.keys(`${PREFIX}*`)).length
  t.ok(after - before <= 40, `${after - before} keys for 20 failures`)
  t.equal((await db.keys(`${PREFIX}clientid:*`)).length, 0, 'no client id keys from refused logins')
})
