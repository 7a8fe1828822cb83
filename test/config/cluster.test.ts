import t from 'tap'
import { writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { parseConfig, redactedConfig } from '../../src/config/schema.js'
import { scratch } from '../helpers/scratch.js'

const dir = scratch('bastion-cluster-cfg-')

function refusal (doc: unknown, env: NodeJS.ProcessEnv = {}): string {
  try {
    parseConfig(doc, '/srv', { env })
  } catch (err) {
    return (err as Error).message
  }
  throw new Error('accepted')
}

t.test('without cluster the broker is a single node', async (t) => {
  t.equal(parseConfig({}, '/srv').cluster, undefined)
})

t.test('cluster defaults: Redis on 127.0.0.1:6379 db 0, keys and channels under bastion:, node hostname-pid', async (t) => {
  const c = parseConfig({ cluster: { redis: {} } }, '/srv').cluster
  t.same(c, { nodeId: `${hostname().replace(/[^A-Za-z0-9._-]/g, '-')}-${process.pid}`, heartbeatInterval: 5, workers: 1, redis: { host: '127.0.0.1', port: 6379, db: 0, keyPrefix: 'bastion:', connectTimeout: 5000 } })
  t.ok(Object.isFrozen(c) && Object.isFrozen(c?.redis))
})

t.test('every cluster key is checked and named when wrong', async (t) => {
  t.match(refusal({ cluster: {} }), 'config cluster.redis: is required')
  t.match(refusal({ cluster: null }), 'config cluster: must be a mapping')
  t.match(refusal({ cluster: { redis: { hots: 'x' } } }), 'config cluster.redis.hots: unknown key')
  t.match(refusal({ cluster: { redis: {}, nodes: 2 } }), 'config cluster.nodes: unknown key')
  t.match(refusal({ cluster: { redis: { port: 0 } } }), 'config cluster.redis.port: must be an integer from 1 to 65535')
  t.match(refusal({ cluster: { redis: { db: 16 } } }), 'config cluster.redis.db: must be an integer from 0 to 15')
  t.match(refusal({ cluster: { redis: { host: 'a b' } } }), 'config cluster.redis.host:')
  t.match(refusal({ cluster: { redis: { connectTimeout: 10 } } }), 'config cluster.redis.connectTimeout:')
  // ':' would split aedes-persistence-redis' keys in the wrong place; '/', '+', '#' are topic syntax.
  for (const id of ['host:1', 'a/b', 'a+', '#', '']) t.match(refusal({ cluster: { nodeId: id, redis: {} } }), 'config cluster.nodeId:', id)
  for (const prefix of ['a*', 'x[1]', 'a b', '']) t.match(refusal({ cluster: { redis: { keyPrefix: prefix } } }), 'config cluster.redis.keyPrefix:', prefix)
})

t.test('cluster.heartbeatInterval: 5 s unless set, whole seconds from 1 to 300', async (t) => {
  t.equal(parseConfig({ cluster: { redis: {} } }, '/srv').cluster?.heartbeatInterval, 5)
  t.equal(parseConfig({ cluster: { redis: {}, heartbeatInterval: 1 } }, '/srv').cluster?.heartbeatInterval, 1)
  for (const v of [0, 301, 2.5, '5']) t.match(refusal({ cluster: { redis: {}, heartbeatInterval: v } }), 'config cluster.heartbeatInterval: must be an integer from 1 to 300', String(v))
})

t.test('the Redis password comes from the file, a file or the environment, and config check blanks it', async (t) => {
  t.match(refusal({ cluster: { redis: { password: 'a', passwordEnv: 'B' } } }), 'config cluster.redis: give one of password, passwordFile, passwordEnv')
  t.match(refusal({ cluster: { redis: { passwordEnv: 'NOPE_NOT_SET' } } }), 'config cluster.redis.passwordEnv: environment variable NOPE_NOT_SET is not set')
  const d = dir()
  writeFileSync(join(d, 'redis.pw'), 'from-a-file\n')
  t.equal(parseConfig({ cluster: { redis: { passwordFile: 'redis.pw' } } }, d).cluster?.redis.password, 'from-a-file')
  t.equal(parseConfig({ cluster: { redis: { passwordEnv: 'RPW' } } }, d, { env: { RPW: 'from-env' } }).cluster?.redis.password, 'from-env')
  const c = parseConfig({ cluster: { nodeId: 'n1', redis: { host: '10.0.0.4', password: 'redis-s3cret' } } }, d)
  const shown = JSON.stringify(redactedConfig(c))
  t.notMatch(shown, 'redis-s3cret')
  t.equal((redactedConfig(c) as any).cluster.redis.password, '[redacted]')
})
