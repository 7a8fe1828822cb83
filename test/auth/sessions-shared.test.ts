// The session registry with a cluster's shared holders (a fake here; the Redis one is in
// test/cluster/state.test.ts): a hold the cluster refuses or cannot answer is undone here, a
// connection that ends releases only what it held, and endAll tells every live client 0x89.
import t from 'tap'
import { EventEmitter } from 'node:events'
import { pino } from 'pino'
import { createSessionRegistry, type SharedHolders } from '../../src/auth/sessions.js'

interface FakeClient { id: string; conn: EventEmitter; closed: boolean; sessionExpiryInterval: number; reason?: number; disconnect: (o: { reasonCode: number }, cb: () => void) => void }

function client (id: string, expiry = 0): FakeClient {
  const c: FakeClient = {
    id, conn: new EventEmitter(), closed: false, sessionExpiryInterval: expiry,
    disconnect (o, cb) { c.reason = o.reasonCode; c.closed = true; c.conn.emit('close'); cb() }
  }
  return c
}

/** Holders the test answers for: `answer` per id (a user name, undefined, or 'fault'). */
function fakeHolders (): SharedHolders & { answer: Map<string, string | undefined>; released: Array<[string, string, number]>; gate?: Promise<void> } {
  const h = {
    answer: new Map<string, string | undefined>(),
    released: [] as Array<[string, string, number]>,
    gate: undefined as Promise<void> | undefined,
    refreshMs: 60_000,
    async hold (clientId: string) {
      await h.gate
      const a = h.answer.get(clientId)
      if (a === 'fault') throw new Error('redis down')
      return a
    },
    release (clientId: string, user: string, keep: number) { h.released.push([clientId, user, keep]) },
    refresh () {}
  }
  return h
}

const log = pino({ level: 'silent' })
const grant = (user: string): { user: string; remote: string } => ({ user, remote: '127.0.0.1' })

t.test('a hold the cluster gives is kept; one it refuses is undone here and its close releases nothing', async (t) => {
  const shared = fakeHolders()
  const r = createSessionRegistry({ log, shared })
  const a = client('dev')
  t.equal(r.admit(a as any, grant('alice')), undefined)
  t.equal(await r.share(a as any, grant('alice')), undefined)
  shared.answer.set('dev2', 'bob')
  const c = client('dev2')
  t.equal(r.admit(c as any, grant('alice')), undefined)
  t.equal(await r.share(c as any, grant('alice')), 'clientid_taken', 'bob holds it on another node')
  c.conn.emit('close')
  t.same(shared.released, [], 'the refused login frees nothing: the hold is bob\'s')
  t.equal(r.admit(client('dev2') as any, grant('carol')), undefined, 'nor does this node hold it any more')
  a.conn.emit('close')
  t.same(shared.released, [['dev', 'alice', 0]])
})

t.test('a cluster that cannot answer: share throws, and this node holds nothing', async (t) => {
  const shared = fakeHolders()
  const r = createSessionRegistry({ log, shared })
  shared.answer.set('dev', 'fault')
  const a = client('dev')
  t.equal(r.admit(a as any, grant('alice')), undefined)
  await t.rejects(r.share(a as any, grant('alice')), /redis down/)
  t.equal(r.admit(client('dev') as any, grant('bob')), undefined, 'the id is not held here')
})

t.test('a socket that closes while the cluster is asked: its kept session is undone when the answer is no', async (t) => {
  const shared = fakeHolders()
  const r = createSessionRegistry({ log, shared })
  shared.answer.set('dev', 'bob')
  let open: () => void = () => {}
  shared.gate = new Promise((resolve) => { open = resolve })
  const a = client('dev', 60)
  t.equal(r.admit(a as any, grant('alice')), undefined)
  const asked = r.share(a as any, grant('alice'))
  a.closed = true
  a.conn.emit('close')
  t.same(shared.released, [['dev', 'alice', 60]], 'the release goes out after the hold, on the same connection')
  open()
  t.equal(await asked, 'clientid_taken')
  t.equal(r.admit(client('dev') as any, grant('bob')), undefined, 'no session kept here for alice')
})

t.test('endAll tells every live client DISCONNECT 0x89, with no will; a resumable session stays held', async (t) => {
  const shared = fakeHolders()
  const lines: Array<Record<string, any>> = []
  const r = createSessionRegistry({ log: pino({ level: 'info' }, { write: (s: string) => { lines.push(JSON.parse(s)) } }), shared })
  const cs = [client('d1'), client('d2', 60)]
  for (const [i, c] of cs.entries()) r.admit(c as any, grant(`u${i}`))
  r.endAll()
  t.same(cs.map((c) => c.reason), [0x89, 0x89])
  t.ok(cs.every((c) => r.isRevoked(c as any)), 'no will for them')
  t.same(shared.released, [['d1', 'u0', 0], ['d2', 'u1', 60]], 'a session that may be resumed stays its user\'s')
  t.equal(r.admit(client('d2') as any, grant('mallory')), 'clientid_taken', 'here too')
  t.match(lines.filter((l) => l.event === 'cluster.clients_disconnected'), [{ clients: 2 }])
})
