import t from 'tap'
import { createMetricsPolicy } from '../../src/acl/metrics.js'
import { filterWithin, isReserved } from '../../src/acl/topics.js'
import type { Action } from '../../src/types.js'

const policy = createMetricsPolicy({ prefix: 'metrics', leaves: ['Temperatura', 'Humedad', 'Estado'] })
const alice = { user: 'alice', clientId: 'c1', remoteAddress: '127.0.0.1', hasWill: false }
const allowed = (action: Action, topic: string): boolean => policy.decide(alice, action, topic).allow

t.test('a device publishes only to its own configured leaves', async (t) => {
  for (const leaf of ['Temperatura', 'Humedad', 'Estado']) t.ok(allowed('publish', `metrics/alice/${leaf}`), leaf)
  for (const topic of ['metrics/alice/Presion', 'metrics/bob/Temperatura', 'metrics/alice', 'metrics/alice/Temperatura/x',
    'metrics/alice/', 'Metrics/alice/Estado', 'metrics//Estado', '$SYS/metrics/alice/Estado', 'x/metrics/alice/Estado']) {
    t.notOk(allowed('publish', topic), topic)
  }
})

t.test('subscriptions must not be able to match outside metrics/<user>/', async (t) => {
  for (const f of ['metrics/alice/#', 'metrics/alice/+', 'metrics/alice/Estado', 'metrics/alice/+/x']) t.ok(allowed('subscribe', f), f)
  for (const f of ['#', '+', 'metrics/#', 'metrics/+', 'metrics/+/#', '+/alice/#', 'metrics/bob/#', 'metrics/alice',
    '$SYS/#', '$share/g/metrics/alice/#', 'metrics/alicex/#', 'metrics/ali+/#']) {
    t.notOk(allowed('subscribe', f), f)
  }
})

t.test('delivery (read) is allowed only below the own branch', async (t) => {
  t.ok(allowed('read', 'metrics/alice/Estado'))
  t.notOk(allowed('read', 'metrics/bob/Estado'))
  t.notOk(allowed('read', '$SYS/broker/heartbeat'))
  t.notOk(allowed('read', 'metrics/alice'))
})

t.test('another prefix and leaf list come from config', async (t) => {
  const p = createMetricsPolicy({ prefix: 'sensors', leaves: ['co2'] })
  t.ok(p.decide(alice, 'publish', 'sensors/alice/co2').allow)
  t.notOk(p.decide(alice, 'publish', 'metrics/alice/Temperatura').allow)
})

t.test('topic helpers', async (t) => {
  t.ok(isReserved('$SYS/x'))
  t.notOk(isReserved('a/$SYS'))
  t.ok(filterWithin('a/b/#', ['a', 'b']))
  t.notOk(filterWithin('a/+/#', ['a', 'b']))
  t.notOk(filterWithin('a/b', ['a', 'b']))
})
