import t from 'tap'
import { parseConfig } from '../../src/config/schema.js'

t.test('hardening defaults: every limit is on with a safe value', async (t) => {
  const c = parseConfig({}, '/srv')
  t.same(c.auth.lockout, { window: 900, maxFailuresPerUser: 10, maxFailuresPerIp: 50, duration: 60, maxDuration: 3600 })
  t.same(c.auth.loginQueue, { concurrency: 0, maxWaiting: 100 })
  t.equal(c.auth.clientIdBinding, 'owner')
  t.equal(c.auth.recheckInterval, 30)
  t.same(c.limits, {
    maxConnections: 10000,
    maxConnectionsPerIp: 100,
    tlsHandshakeTimeout: 10,
    connectTimeout: 10,
    maxKeepAlive: 300,
    receiveMaximum: 32,
    maxPacketSize: 65536,
    maxTopicLength: 256,
    maxClientIdLength: 256,
    maxTopicLevels: 16,
    maxSubscriptions: 64,
    maxQueuedBytes: 1048576,
    publishRate: { messages: 100, bytes: 1048576 },
    subscribeRate: { packets: 50, filters: 500 }
  })
  t.same(c.shutdown, { drainTimeout: 5 })
  t.ok(Object.isFrozen(c.limits) && Object.isFrozen(c.limits.publishRate) && Object.isFrozen(c.limits.subscribeRate) && Object.isFrozen(c.auth.lockout), 'frozen')
})

t.test('given values are kept', async (t) => {
  const c = parseConfig({
    auth: { lockout: { maxFailuresPerIp: 0, duration: 5, maxDuration: 5 }, clientIdBinding: 'prefix', recheckInterval: 0, loginQueue: { concurrency: 8, maxWaiting: 0 } },
    limits: { maxConnectionsPerIp: 0, maxPacketSize: 1024, maxQueuedBytes: 4096, publishRate: { messages: 5, bytes: 2048 }, subscribeRate: { packets: 2, filters: 3 } },
    shutdown: { drainTimeout: 0 }
  }, '/srv')
  t.match(c.auth.lockout, { maxFailuresPerIp: 0, duration: 5, maxDuration: 5, maxFailuresPerUser: 10 })
  t.equal(c.auth.clientIdBinding, 'prefix')
  t.equal(c.auth.recheckInterval, 0)
  t.same(c.auth.loginQueue, { concurrency: 8, maxWaiting: 0 })
  t.match(c.limits, { maxConnectionsPerIp: 0, maxPacketSize: 1024, maxQueuedBytes: 4096, publishRate: { messages: 5, bytes: 2048 }, subscribeRate: { packets: 2, filters: 3 } })
  t.equal(c.shutdown.drainTimeout, 0)
})

t.test('bad hardening keys and values are refused naming the key', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ limits: { maxConections: 5 } }, /config limits\.maxConections: unknown key/],
    [{ limits: { maxConnections: 0 } }, /config limits\.maxConnections: must be an integer from 1/],
    [{ limits: { connectTimeout: 0.5 } }, /config limits\.connectTimeout: must be an integer/],
    [{ limits: { maxTopicLevels: 101 } }, /config limits\.maxTopicLevels: must be an integer from 1 to 100/],
    [{ limits: { receiveMaximum: 0 } }, /config limits\.receiveMaximum: must be an integer from 1 to 65535/],
    [{ limits: { receiveMaximum: 65536 } }, /config limits\.receiveMaximum: must be an integer from 1 to 65535/],
    [{ limits: { publishRate: { msgs: 1 } } }, /config limits\.publishRate\.msgs: unknown key/],
    // A message of the largest allowed size must be able to pass the byte bucket and the queue.
    [{ limits: { maxPacketSize: 100000, publishRate: { bytes: 50000 } } }, /config limits\.publishRate\.bytes: must be an integer from 100000/],
    [{ limits: { subscribeRate: { messages: 1 } } }, /config limits\.subscribeRate\.messages: unknown key/],
    [{ limits: { subscribeRate: { packets: 0 } } }, /config limits\.subscribeRate\.packets: must be an integer from 1 to 1000000/],
    [{ limits: { subscribeRate: { filters: 1.5 } } }, /config limits\.subscribeRate\.filters: must be an integer from 1 to 1000000/],
    [{ limits: { subscribeRate: 10 } }, /config limits\.subscribeRate/],
    [{ limits: { maxPacketSize: 2000000 } }, /config limits\.maxQueuedBytes: must be an integer from 2000000/],
    [{ auth: { lockout: { duration: 600, maxDuration: 60 } } }, /config auth\.lockout\.maxDuration: must be at least auth\.lockout\.duration \(600\)/],
    [{ auth: { lockout: { treshold: 3 } } }, /config auth\.lockout\.treshold: unknown key/],
    [{ auth: { clientIdBinding: 'strict' } }, /config auth\.clientIdBinding: must be one of owner, none, exact, prefix/],
    [{ auth: { recheckInterval: -1 } }, /config auth\.recheckInterval: must be an integer from 0/],
    [{ auth: { loginQueue: { maxWaiting: 'lots' } } }, /config auth\.loginQueue\.maxWaiting: must be an integer/],
    [{ shutdown: { grace: 3 } }, /config shutdown\.grace: unknown key/]
  ]
  for (const [doc, message] of bad) t.throws(() => parseConfig(doc, '/srv'), { code: 'BASTION_ERR_CONFIG', message }, JSON.stringify(doc))
})
