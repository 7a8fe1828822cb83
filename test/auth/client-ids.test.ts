// Client id owners (auth.clientIdBinding owner): in memory, and in the SQLite store where the
// CLI can see and release them; the same rules for both.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createMemoryClientIds } from '../../src/auth/client-ids.js'
import { MAX_IDS_PER_USER } from '../../src/stores/sqlite-client-ids.js'
import { createSqliteStore } from '../../src/stores/sqlite.js'
import type { ClientIdOwners } from '../../src/stores/store.js'

const dir = mkdtempSync(join(tmpdir(), 'bastion-clientids-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))

async function kinds (): Promise<Array<[string, ClientIdOwners, () => Promise<void>]>> {
  const store = createSqliteStore({ path: join(mkdtempSync(join(dir, 'db-')), 'users.db') })
  return [['memory', createMemoryClientIds(), async () => {}], ['sqlite', store.clientIds as ClientIdOwners, async () => { await store.close() }]]
}

for (const [kind, make] of [['memory', 0], ['sqlite', 1]] as const) {
  t.test(`${kind}: the first user to log in with an id owns it; others are told who does`, async (t) => {
    const [, owners, close] = (await kinds())[make] as [string, ClientIdOwners, () => Promise<void>]
    t.teardown(close)
    t.equal(await owners.bind('sensor-10-kitchen', 'sensor-10'), 'sensor-10')
    t.equal(await owners.bind('sensor-10-kitchen', 'sensor-1'), 'sensor-10', 'another user cannot take it')
    t.equal(await owners.bind('sensor-10-kitchen', 'SENSOR-10'), 'sensor-10', 'the owner, whatever the case of its name')
    t.equal(await owners.bind('__proto__', 'mallory'), 'mallory', 'a hostile id is an ordinary key')
    t.equal(await owners.bind('__proto__', 'alice'), 'mallory')
    t.match(await owners.list('sensor-10'), [{ clientId: 'sensor-10-kitchen', user: 'sensor-10' }])
    t.equal(await owners.release('sensor-10-kitchen'), true)
    t.equal(await owners.release('sensor-10-kitchen'), false)
    t.equal(await owners.bind('sensor-10-kitchen', 'sensor-1'), 'sensor-1', 'released: free for the next')
  })

  t.test(`${kind}: a user keeps its ${MAX_IDS_PER_USER} most recent ids; random ids cannot grow the table`, async (t) => {
    const [, owners, close] = (await kinds())[make] as [string, ClientIdOwners, () => Promise<void>]
    t.teardown(close)
    for (let i = 0; i < MAX_IDS_PER_USER * 3; i++) await owners.bind(`random-${i}`, 'mallory')
    const held = await owners.list('mallory')
    t.equal(held.length, MAX_IDS_PER_USER)
    t.equal(await owners.bind('random-0', 'alice'), 'alice', 'the oldest were released')
  })
}

t.test('sqlite: a binding survives a restart and is seen by another process\'s store', async (t) => {
  const path = join(mkdtempSync(join(dir, 'db-')), 'users.db')
  const a = createSqliteStore({ path })
  await a.clientIds?.bind('dev-1', 'alice')
  await a.close()
  const b = createSqliteStore({ path })
  const c = createSqliteStore({ path })
  t.teardown(async () => { await b.close(); await c.close() })
  t.equal(await b.clientIds?.bind('dev-1', 'mallory'), 'alice')
  // Two stores (two connections) race to bind one new id: exactly one user gets it.
  const [x, y] = await Promise.all([b.clientIds?.bind('dev-2', 'u1'), c.clientIds?.bind('dev-2', 'u2')])
  t.equal(x, y, 'both see the same owner')
  await b.add({ username: 'alice', passwordHash: 'h', totpSecret: 'A'.repeat(32), enabled: true, createdAt: '' })
  await b.remove('alice')
  t.same(await c.clientIds?.list('alice'), [], 'removing a user releases its ids')
})
