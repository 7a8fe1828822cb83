// A connection does not keep its CONNECT (password, username, will payload) in memory after the
// login: mqtt-packet's parser kept it as its settings for the connection's life
// (patches/aedes/0015). The parser still reads each version's packets afterwards.
import t from 'tap'
import type { Client } from 'aedes'
import { nextMessage, PASSWORD, startHarness } from '../helpers/harness.js'

interface ParserInternals { _parser: { settings: Record<string, unknown> } }

t.test('after the login the parser holds only the protocol version', async (t) => {
  const h = await startHarness({ auth: { totp: { replayProtection: false } } })
  t.teardown(() => h.close())
  await h.addUser('sec')
  for (const protocolVersion of [4, 5] as const) {
    const clientId = `sec-v${protocolVersion}`
    const c = await h.connect('sec', { clientId, protocolVersion, will: { topic: 'metrics/sec/Estado', payload: Buffer.from('will-payload-secret'), qos: 1, retain: false } })
    const held = (h.bastion.broker.clients[clientId] as unknown as (Client & ParserInternals) | undefined)
    t.ok(held, `${clientId} is connected`)
    const settings = held?._parser.settings ?? {}
    t.same(Object.keys(settings).sort(), ['bridgeMode', 'protocolVersion'], `v${protocolVersion}: nothing but the version and bridge flag`)
    t.equal(settings.protocolVersion, protocolVersion)
    t.notOk(JSON.stringify(settings).includes(PASSWORD), 'no password')
    // The parser still reads this version's packets: a subscription and a delivery round trip.
    await c.subscribeAsync('metrics/sec/#', { qos: 1 })
    const got = nextMessage(c)
    await c.publishAsync('metrics/sec/Temperatura', `t${protocolVersion}`, { qos: 1 })
    t.equal((await got)?.payload, `t${protocolVersion}`, `v${protocolVersion} still publishes and receives`)
    await c.endAsync()
  }
})
