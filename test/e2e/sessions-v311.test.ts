// MQTT 3.1.1 persistent sessions under sessions.maxExpiry > 0: they live exactly that long
// (3.1.1 cannot ask for an expiry), then they are gone (patches/aedes/0010). With the default
// cap of 0 they are treated as clean (test/e2e/sessions.test.ts).
import t from 'tap'
import { nextMessage, startHarness } from '../helpers/harness.js'

const MAX_EXPIRY = 2
const h = await startHarness({ sessions: { maxExpiry: MAX_EXPIRY }, auth: { totp: { replayProtection: false } } })
t.teardown(() => h.close())
await h.addUser('old')

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))
const sessionPresent = (c: unknown): boolean | undefined => (c as { connackPacket?: { sessionPresent?: boolean } }).connackPacket?.sessionPresent

t.test('a 3.1.1 clean=false session keeps its subscription and queued messages within sessions.maxExpiry, and expires after it', async (t) => {
  const pub = await h.connect('old', { clientId: 'old-pub' })
  t.teardown(() => pub.endAsync())
  const first = await h.connect('old', { clientId: 'old-persist', protocolVersion: 4, clean: false })
  t.equal(sessionPresent(first), false, 'a new session')
  await first.subscribeAsync('metrics/old/#', { qos: 1 })
  await first.endAsync()
  await pub.publishAsync('metrics/old/Estado', 'while away', { qos: 1 })

  const again = await h.connect('old', { clientId: 'old-persist', protocolVersion: 4, clean: false })
  t.equal(sessionPresent(again), true, 'resumed within the cap')
  t.equal((await nextMessage(again, 2000))?.payload, 'while away', 'the queued message is delivered')
  await again.endAsync()

  // Past the cap (plus a margin for the timer), the session is gone, so is its subscription.
  await sleep(MAX_EXPIRY * 1000 + 1000)
  await pub.publishAsync('metrics/old/Estado', 'after expiry', { qos: 1 })
  const late = await h.connect('old', { clientId: 'old-persist', protocolVersion: 4, clean: false })
  t.equal(sessionPresent(late), false, 'no session after sessions.maxExpiry')
  t.equal(await nextMessage(late, 700), undefined, 'nothing was queued for it')
  await late.endAsync()
})
