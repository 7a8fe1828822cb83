// Client ids and who may hold them, over real TLS: a session is taken over only by its own
// user, and auth.clientIdBinding ties ids to users.
import t from 'tap'
import mqtt, { type MqttClient } from 'mqtt'
import { PASSWORD, events, nextMessage, pubackCode, startHarness, type Harness } from '../helpers/harness.js'

const NO_REPLAY = { totp: { replayProtection: false } }
// The rule for live sessions holds in every mode; with the default (owner) an id another user
// logged in with first is refused before it (test/e2e/clientid-owner.test.ts).
const LIVE_ONLY = { ...NO_REPLAY, clientIdBinding: 'none' }

const h = await startHarness({ auth: LIVE_ONLY })
t.teardown(() => h.close())
await h.addUser('alice')
await h.addUser('bob')

/** The first session still works both ways: it publishes and receives its own message. */
async function stillServes (t: Tap.Test, c: MqttClient, user: string): Promise<void> {
  await c.subscribeAsync(`metrics/${user}/#`, { qos: 1 })
  const got = nextMessage(c, 3000)
  t.equal(await pubackCode(c, `metrics/${user}/Temperatura`, 'still here'), 0, 'the first session publishes')
  t.equal((await got)?.payload, 'still here', 'and receives')
  t.equal(c.connected, true)
}

t.test('a login with another user\'s client id is refused with 0x85 / 2 and the first session stays up', async (t) => {
  const first = await h.connect('alice', { clientId: 'shared-1' })
  let kicked: unknown
  first.on('disconnect', (p) => { kicked = p })
  const okBefore = events(h, 'login.ok').length
  t.equal(await h.refused({ clientId: 'shared-1', username: `bob|${h.code('bob')}`, password: PASSWORD }), 0x85, 'MQTT 5: Client Identifier not valid')
  t.equal(await h.refused({ clientId: 'shared-1', username: `bob|${h.code('bob')}`, password: PASSWORD, protocolVersion: 4 }), 2, '3.1.1: identifier rejected')
  const failed = events(h, 'login.failed').slice(-2)
  t.same(failed.map((e) => [e.reason, e.user, e.clientId, e.remote]), [['clientid_taken', 'bob', 'shared-1', '127.0.0.1'], ['clientid_taken', 'bob', 'shared-1', '127.0.0.1']])
  t.equal(events(h, 'login.ok').length, okBefore, 'no login.ok for the refused logins')
  await stillServes(t, first, 'alice')
  t.equal(kicked, undefined, 'the first session got no DISCONNECT')
  await first.endAsync()
  const later = await h.connect('bob', { clientId: 'shared-1' })
  t.equal(later.connected, true, 'once the first session ended, the id is free')
  await later.endAsync()
})

t.test('the same user takes its own session over and the old connection gets DISCONNECT 0x8E', async (t) => {
  const old = await h.connect('alice', { clientId: 'alice-own' })
  const kicked = new Promise<number | undefined>((resolve) => {
    old.on('disconnect', (p) => resolve(p.reasonCode))
    setTimeout(() => resolve(undefined), 5000)
  })
  const fresh = await h.connect('alice', { clientId: 'alice-own' })
  t.equal(await kicked, 0x8e, 'Session taken over')
  await stillServes(t, fresh, 'alice')
  await fresh.endAsync()
})

t.test('two logins racing for one client id as different users: exactly one is accepted', async (t) => {
  for (let round = 0; round < 5; round++) {
    const clientId = `race-${round}`
    const attempt = async (user: string): Promise<MqttClient | undefined> => {
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
    const [a, b] = await Promise.all([attempt('alice'), attempt('bob')])
    const accepted = [a, b].filter((c) => c !== undefined)
    t.equal(accepted.length, 1, `round ${round}: one CONNACK success`)
    await Promise.all(accepted.map(async (c) => await c?.endAsync(true)))
  }
  t.equal(events(h, 'login.failed').filter((e) => e.reason === 'clientid_taken' && String(e.clientId).startsWith('race-')).length, 5)
})

t.test('a session that outlives its connection (Session Expiry) cannot be resumed by another user', async (t) => {
  const h2 = await startHarness({ auth: LIVE_ONLY, sessions: { maxExpiry: 60 } })
  t.teardown(() => h2.close())
  await h2.addUser('alice')
  await h2.addUser('bob')
  const first = await h2.connect('alice', { clientId: 'keep-1', clean: false, properties: { sessionExpiryInterval: 60 } })
  await first.subscribeAsync('metrics/alice/#', { qos: 1 })
  await first.endAsync()
  t.equal(await h2.refused({ clientId: 'keep-1', clean: false, username: `bob|${h2.code('bob')}`, password: PASSWORD, properties: { sessionExpiryInterval: 60 } }), 0x85)
  const back = await h2.connect('alice', { clientId: 'keep-1', clean: false, properties: { sessionExpiryInterval: 60 } })
  t.equal((back as any).connackPacket?.sessionPresent, true, 'its own user resumes it')
  await back.endAsync()
})

async function bindingHarness (t: Tap.Test, mode: 'exact' | 'prefix'): Promise<Harness> {
  const hb = await startHarness({ auth: { ...NO_REPLAY, clientIdBinding: mode } })
  t.teardown(() => hb.close())
  await hb.addUser('iotclient01')
  return hb
}

t.test('clientIdBinding exact: the client id must be the user name', async (t) => {
  const hb = await bindingHarness(t, 'exact')
  const ok = await hb.connect('iotclient01', { clientId: 'iotclient01' })
  t.equal(ok.connected, true)
  await ok.endAsync()
  const username = `iotclient01|${hb.code('iotclient01')}`
  t.equal(await hb.refused({ clientId: 'iotclient01-sensor', username, password: PASSWORD }), 0x85)
  t.equal(await hb.refused({ clientId: 'iotclient01-sensor', username, password: PASSWORD, protocolVersion: 4 }), 2, '3.1.1: identifier rejected')
  t.equal(await hb.refused({ clientId: '', username, password: PASSWORD }), 0x85, 'an id the server would assign does not name the user either')
  t.same(events(hb, 'login.failed').map((e) => [e.reason, e.user]), [['clientid_binding', 'iotclient01'], ['clientid_binding', 'iotclient01'], ['clientid_binding', 'iotclient01']])
})

t.test('clientIdBinding prefix: the client id must start with the user name', async (t) => {
  const hb = await bindingHarness(t, 'prefix')
  for (const clientId of ['iotclient01-sensor', 'iotclient01']) {
    const ok = await hb.connect('iotclient01', { clientId })
    t.equal(ok.connected, true, clientId)
    await ok.endAsync()
  }
  const v4 = await hb.connect('iotclient01', { clientId: 'iotclient01-v4', protocolVersion: 4 })
  t.equal(v4.connected, true, 'a 3.1.1 client too')
  await v4.endAsync()
  const username = `iotclient01|${hb.code('iotclient01')}`
  t.equal(await hb.refused({ clientId: 'sensor-iotclient01', username, password: PASSWORD }), 0x85)
  t.equal(await hb.refused({ clientId: 'sensor-iotclient01', username, password: PASSWORD, protocolVersion: 4 }), 2)
  t.equal(events(hb, 'login.failed').filter((e) => e.reason === 'clientid_binding').length, 2)
})

t.test('clientIdBinding none (the default) takes any client id, as mosquitto_pub picks random ones', async (t) => {
  const c = await h.connect('alice', { clientId: 'mosq-4fGhT2x9' })
  t.equal(c.connected, true)
  await c.endAsync()
})
