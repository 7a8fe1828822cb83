// Client id squatting: by default an id belongs to the first user that logged in with it, so
// another user cannot hold a device's id while the device is offline between its cron runs.
import t from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { events, PASSWORD, startHarness } from '../helpers/harness.js'

const run = promisify(execFile)
const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')

t.test('another user cannot take an offline device\'s client id: 0x85 / 2, logged; the device keeps it', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  await h.addUser('sensor-10')
  await h.addUser('mallory')
  await h.freshStep()
  await (await h.connect('sensor-10', { clientId: 'sensor-10-kitchen', offset: -1 })).endAsync()
  // From other addresses than the device's, as a squatter would.
  t.equal(await h.refused({ username: `mallory|${h.code('mallory', -1)}`, password: PASSWORD, clientId: 'sensor-10-kitchen', localAddress: '127.0.0.5' }), 0x85)
  t.equal(await h.refused({ username: `mallory|${h.code('mallory', 0)}`, password: PASSWORD, clientId: 'sensor-10-kitchen', protocolVersion: 4, localAddress: '127.0.0.6' }), 2)
  t.match(events(h, 'login.failed').filter((e) => e.reason === 'clientid_owned'), [{ user: 'mallory', clientId: 'sensor-10-kitchen' }])
  const device = await h.connect('sensor-10', { clientId: 'sensor-10-kitchen', offset: 0 })
  t.equal(device.connected, true, 'the device logs in with its id')
  await device.endAsync()
})

t.test('an admin releases an id with the CLI; the next user to log in with it owns it', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  await h.addUser('old-owner')
  await h.addUser('new-owner')
  await h.freshStep()
  await (await h.connect('old-owner', { clientId: 'pump-3', offset: -1 })).endAsync()
  const cfg = join(h.dir, 'bastion.yaml')
  writeFileSync(cfg, 'auth:\n  store: { type: sqlite, path: data/users.db }\n')
  const listed = await run(process.execPath, [CLI, 'clientid', 'list', '--json', '--config', cfg])
  t.match(JSON.parse(listed.stdout), [{ clientId: 'pump-3', user: 'old-owner' }])
  t.match((await run(process.execPath, [CLI, 'clientid', 'release', 'pump-3', '--config', cfg])).stdout, /released client id pump-3/)
  const again = await run(process.execPath, [CLI, 'clientid', 'release', 'pump-3', '--config', cfg]).catch((err: any) => err)
  t.equal(again.code, 1)
  t.match(again.stderr, /not bound to any user/)
  const c = await h.connect('new-owner', { clientId: 'pump-3', offset: 0 })
  t.equal(c.connected, true)
  await c.endAsync()
  t.equal(await h.refused({ username: `old-owner|${h.code('old-owner', 1)}`, password: PASSWORD, clientId: 'pump-3' }), 0x85, 'now the old owner is the stranger')
})

t.test('server-assigned ids are not bound; random ids of one user stay bounded', async (t) => {
  const h = await startHarness({ auth: { totp: { replayProtection: false } } })
  t.teardown(() => h.close())
  await h.addUser('roamer')
  const anon = await h.connect('roamer', { clientId: '' })
  t.equal(anon.connected, true)
  await anon.endAsync()
  for (let i = 0; i < 40; i++) await (await h.connect('roamer', { clientId: `rand-${i}` })).endAsync()
  const owners = h.bastion.store?.clientIds
  const held = await owners?.list('roamer')
  t.equal(held?.length, 32, 'the 32 most recent ids')
  t.notOk(held?.some((o) => o.clientId.startsWith('aedes_')), 'no server-assigned id')
})

t.test('clientIdBinding: none lets another user take an offline device\'s id (explicitly chosen)', async (t) => {
  const h = await startHarness({ auth: { clientIdBinding: 'none' } })
  t.teardown(() => h.close())
  await h.addUser('dev')
  await h.addUser('other')
  await (await h.connect('dev', { clientId: 'dev-1' })).endAsync()
  const c = await h.connect('other', { clientId: 'dev-1' })
  t.equal(c.connected, true)
  await c.endAsync()
})

t.test('clientIdBinding: prefix wants a separator after the user: sensor-1 cannot hold sensor-10-kitchen', async (t) => {
  const h = await startHarness({ auth: { clientIdBinding: 'prefix' } })
  t.teardown(() => h.close())
  await h.addUser('sensor-1')
  await h.freshStep()
  t.equal(await h.refused({ username: `sensor-1|${h.code('sensor-1', -1)}`, password: PASSWORD, clientId: 'sensor-10-kitchen' }), 0x85)
  t.match(events(h, 'login.failed').at(-1), { reason: 'clientid_binding' })
  const c = await h.connect('sensor-1', { clientId: 'sensor-1-kitchen', offset: 0 })
  t.equal(c.connected, true)
  await c.endAsync()
})
