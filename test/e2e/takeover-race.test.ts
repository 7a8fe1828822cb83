// Several logins of one user taking over one client id at once (patches/aedes/0011): exactly
// one connection stays, aedes' count of clients stays true, and revocation reaches the one that
// stayed. Before the patch both racing logins stayed connected, one beyond takeover and
// revocation (a disabled user kept publishing).
import t from 'tap'
import type { Client } from 'aedes'
import { PASSWORD, startHarness } from '../helpers/harness.js'
import { rawClient, until, type RawClient } from '../helpers/limits.js'

const TRIALS = 20
const h = await startHarness({ auth: { totp: { replayProtection: false }, recheckInterval: 1 } })
t.teardown(() => h.close())
await h.addUser('racer')
const sockets: RawClient[] = []
t.teardown(() => { for (const s of sockets) s.socket.destroy() })

const broker = h.bastion.broker as unknown as { clients: Record<string, Client>; connectedClients: number }
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** A raw MQTT 5 login as racer with this client id; resolves with its CONNACK reason code. */
async function login (clientId: string): Promise<{ r: RawClient; code: number | undefined }> {
  const r = await rawClient(h, { clientId, username: `racer|${h.code('racer')}`, password: Buffer.from(PASSWORD) })
  sockets.push(r)
  return { r, code: (await r.next('connack', 5000) as { reasonCode?: number } | undefined)?.reasonCode }
}
const open = (x: { r: RawClient; code: number | undefined }): boolean => x.code === 0 && !x.r.socket.destroyed && x.r.socket.readyState === 'open'

t.test('two logins taking over one client id at once leave exactly one connection, the one aedes holds', async (t) => {
  const before = broker.connectedClients
  const problems: string[] = []
  for (let trial = 0; trial < TRIALS; trial++) {
    const id = `race-${trial}`
    const first = await login(id)
    const racing = await Promise.all([login(id), login(id)])
    const all = [first, ...racing]
    // Takeovers answer with DISCONNECT 0x8E and close; let them finish.
    await until(3000, () => all.filter(open).length <= 1)
    await sleep(100)
    const live = all.filter(open)
    if (live.length !== 1) problems.push(`${id}: ${live.length} connections open`)
    const held = broker.clients[id]
    if (held === undefined) problems.push(`${id}: no client registered`)
    for (const x of all) x.r.socket.destroy()
  }
  t.same(problems, [], `one connection per id in ${TRIALS} races`)
  t.ok(await until(3000, () => broker.connectedClients === before), `aedes counts ${broker.connectedClients} clients after every socket closed (${before} before)`)
  t.same(Object.keys(broker.clients).filter((id) => id.startsWith('race-')), [], 'nothing left registered')
})

t.test('a user disabled while its logins race for one id is cut off on every connection', async (t) => {
  const live: Array<{ r: RawClient; code: number | undefined }> = []
  for (let trial = 0; trial < 5; trial++) {
    const id = `revoke-${trial}`
    const first = await login(id)
    live.push(first, ...await Promise.all([login(id), login(id)]))
  }
  await sleep(300)
  const store = h.bastion.store
  if (store === undefined) throw new Error('the harness has a file store')
  await store.update('racer', { enabled: false })
  // auth.recheckInterval is 1 s.
  t.ok(await until(5000, () => live.every((x) => !open(x))), `every connection of the disabled user is closed (${live.filter(open).length} open)`)
})
