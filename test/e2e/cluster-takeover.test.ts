// A client id taken over from another node (patches/aedes/0016-takeover-from-another-broker):
// the old connection is told DISCONNECT 0x8E as on one node, no server will is published for a
// device that only moved, and a delayed will armed on the node it left is not published once
// it is connected again elsewhere.
import t from 'tap'
import { join } from 'node:path'
import type { MqttClient } from 'mqtt'
import { events, startHarness, subackCode, type Harness } from '../helpers/harness.js'
import { startRedisServer } from '../helpers/redis-server.js'
import { scratch } from '../helpers/scratch.js'

const redis = await startRedisServer()
t.teardown(() => redis.close())
const users = join(scratch('bastion-cluster-takeover-')(), 'users.db')

async function node (nodeId: string): Promise<Harness> {
  const h = await startHarness({
    // Each test logs one user in several times within one 30 s step.
    auth: { store: { type: 'sqlite', path: users }, workers: 1, totp: { replayProtection: false } },
    sessions: { maxExpiry: 60 },
    cluster: { nodeId, redis: { host: '127.0.0.1', port: redis.port, keyPrefix: 'takeover-test:' } }
  })
  t.teardown(() => h.close())
  return h
}
const a = await node('a')
const b = await node('b')

/** Messages arriving on `c` during `ms`. */
async function during (c: MqttClient, ms: number): Promise<Array<[string, string]>> {
  const got: Array<[string, string]> = []
  const on = (topic: string, payload: Buffer): void => { got.push([topic, payload.toString()]) }
  c.on('message', on)
  await new Promise((resolve) => setTimeout(resolve, ms))
  c.off('message', on)
  return got
}

t.test('a device taking its id over on B: the old connection on A gets DISCONNECT 0x8E, and no server will is published', async (t) => {
  b.knowSecret('alice', await a.addUser('alice'))
  const watcher = await b.connect('alice', { clientId: 'alice-watcher' })
  t.equal(await subackCode(watcher, 'metrics/alice/#', 1), 1)
  const old = await a.connect('alice', { clientId: 'alice-sensor' })
  const told = new Promise<number | undefined>((resolve) => {
    old.once('disconnect', (packet: any) => resolve(packet.reasonCode))
    old.once('close', () => setTimeout(() => resolve(undefined), 200))
  })
  const watched = during(watcher, 2000)
  const moved = await b.connect('alice', { clientId: 'alice-sensor' })
  t.equal(await told, 0x8E, 'DISCONNECT 0x8E Session taken over')
  t.same(await watched, [], 'nothing on alice\'s branch: no server will for a device that moved')
  t.same(events(a, 'will.published'), [])
  t.equal(moved.connected, true)
  await moved.endAsync()
  await watcher.endAsync()
})

t.test('a delayed will armed on A when the device dropped is cancelled when it comes back on B', async (t) => {
  b.knowSecret('carol', await a.addUser('carol'))
  const watcher = await b.connect('carol', { clientId: 'carol-watcher' })
  t.equal(await subackCode(watcher, 'metrics/carol/#', 1), 1)
  const will = { topic: 'metrics/carol/Estado', payload: Buffer.from('offline'), qos: 1 as const, retain: false, properties: { willDelayInterval: 2 } }
  const first = await a.connect('carol', { clientId: 'carol-sensor', clean: false, properties: { sessionExpiryInterval: 30 }, will })
  // Dropped without DISCONNECT: A arms the will for 2 s from now.
  first.stream.destroy()
  await new Promise((resolve) => setTimeout(resolve, 300))
  const back = await b.connect('carol', { clientId: 'carol-sensor', clean: false, properties: { sessionExpiryInterval: 30 } })
  t.same(await during(watcher, 3500), [], 'carol is connected on B: her will is not published')
  await back.endAsync()
  await watcher.endAsync()
})
