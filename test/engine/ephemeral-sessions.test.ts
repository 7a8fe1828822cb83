// With ephemeralSessions (patches/aedes/0023; our default, sessions.maxExpiry 0) no session
// outlives its connection: a 3.1.1 CleanSession 0 session is not kept after the client leaves,
// nothing is queued for it while it is away, and a QoS 1 PUBLISH is not looked up for offline
// subscribers. Without the option aedes keeps such a session, which the control case shows.
// A bare aedes over plain TCP on 127.0.0.1.
import t from 'tap'
import { startBareBroker } from '../helpers/bare-aedes.js'
import { bareClient } from '../helpers/bare-client.js'

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** A CleanSession 0 client subscribes and leaves; a QoS 1 message comes; it returns. What does it find? */
async function away (t: Tap.Test, ephemeralSessions: boolean): Promise<{ sessionPresent: boolean; queued: string[]; lookups: number }> {
  const { broker, port } = await startBareBroker(t, { ephemeralSessions })
  const persistence = broker.persistence as unknown as { subscriptionsByTopic: (topic: string) => Promise<unknown[]> }
  const lookup = persistence.subscriptionsByTopic.bind(persistence)
  let lookups = 0
  persistence.subscriptionsByTopic = async (topic) => { lookups++; return await lookup(topic) }
  const device = await bareClient(t, port, 'dev-1', { clean: false })
  await device.until(() => device.got.some((p) => p.cmd === 'connack'))
  device.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'metrics/dev/#', qos: 1 }] })
  await device.until(() => device.got.some((p) => p.cmd === 'suback'))
  device.send({ cmd: 'disconnect' })
  await device.closed
  await sleep(50)
  const publisher = await bareClient(t, port, 'pub-1')
  await publisher.until(() => publisher.got.some((p) => p.cmd === 'connack'))
  publisher.send({ cmd: 'publish', topic: 'metrics/dev/Temperatura', payload: Buffer.from('21.5'), qos: 1, messageId: 3, retain: false, dup: false })
  await publisher.until(() => publisher.got.some((p) => p.cmd === 'puback'))
  const back = await bareClient(t, port, 'dev-1', { clean: false })
  await back.until(() => back.got.some((p) => p.cmd === 'connack'))
  await sleep(200) // what was queued follows the CONNACK
  const connack = back.got.find((p) => p.cmd === 'connack')
  return { sessionPresent: connack?.sessionPresent === true, queued: back.got.filter((p) => p.cmd === 'publish').map((p) => String(p.payload)), lookups }
}

t.test('ephemeralSessions: the session ends with its connection and nothing is queued or looked up', async (t) => {
  const r = await away(t, true)
  t.equal(r.sessionPresent, false, 'CONNACK: no session present')
  t.same(r.queued, [], 'nothing queued while it was away')
  t.equal(r.lookups, 0, 'no offline-subscriber lookup for the QoS 1 PUBLISH')
})

t.test('without it (control): the CleanSession 0 session is kept and the message queued', async (t) => {
  const r = await away(t, false)
  t.equal(r.sessionPresent, true, 'CONNACK: session present')
  t.same(r.queued, ['21.5'], 'the message queued while it was away, delivered on return')
  t.ok(r.lookups >= 1, `looked up for offline subscribers (${r.lookups})`)
})

t.test('ephemeralSessions: a session stored before (here, put in the persistence) is discarded, not resumed', async (t) => {
  const { broker, port } = await startBareBroker(t, { ephemeralSessions: true })
  const persistence = broker.persistence as unknown as { addSubscriptions: (client: { id: string }, subs: object[]) => Promise<void> }
  await persistence.addSubscriptions({ id: 'dev-2' }, [{ topic: 'metrics/dev2/#', qos: 1, rh: 0, rap: false, nl: false }])
  const device = await bareClient(t, port, 'dev-2', { clean: false })
  await device.until(() => device.got.some((p) => p.cmd === 'connack'))
  t.equal(device.got.find((p) => p.cmd === 'connack')?.sessionPresent, false, 'CONNACK: no session present')
  const publisher = await bareClient(t, port, 'pub-2')
  await publisher.until(() => publisher.got.some((p) => p.cmd === 'connack'))
  publisher.send({ cmd: 'publish', topic: 'metrics/dev2/Temperatura', payload: Buffer.from('19'), qos: 1, messageId: 4, retain: false, dup: false })
  await publisher.until(() => publisher.got.some((p) => p.cmd === 'puback'))
  await sleep(200)
  t.same(device.got.filter((p) => p.cmd === 'publish').map((p) => String(p.payload)), [], 'its stored subscription was not restored: nothing delivered')
})
