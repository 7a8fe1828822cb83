// The embedded SQLite store under a running broker, over real TLS: the CLI writes it while
// devices log in (no lock files, no lock errors), and a config still naming the JSON store works.
import t from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import bcrypt from 'bcryptjs'
import { events, startHarness } from '../helpers/harness.js'

const run = promisify(execFile)
const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
const base = { monitoring: { enabled: true, port: 0 }, auth: { lockout: { maxFailuresPerIp: 0, maxFailuresPerUser: 0 } } }

t.test('the CLI writes the SQLite store while the broker serves logins: no lock errors, nothing lost', async (t) => {
  const h = await startHarness({ ...base, auth: { ...base.auth, totp: { replayProtection: false } } })
  t.teardown(() => h.close())
  const devices = ['d0', 'd1', 'd2', 'd3']
  for (const d of devices) await h.addUser(d)
  const cfg = join(h.dir, 'bastion.yaml')
  writeFileSync(cfg, 'auth:\n  store: { type: sqlite, path: data/users.db }\n')
  const hash = bcrypt.hashSync('another password', 4)
  // Writers: the real CLI, three users added and toggled in one go (each its own process).
  const writers = (async () => {
    const lines = Array.from({ length: 3 }, (_, i) => JSON.stringify({ username: `new${i}`, passwordHash: hash, totpSecret: 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP', enabled: true })).join('\n') + '\n'
    writeFileSync(join(h.dir, 'more.jsonl'), lines)
    const out: string[] = []
    out.push((await run(process.execPath, [CLI, 'user', 'import', join(h.dir, 'more.jsonl'), '--config', cfg])).stdout)
    for (let i = 0; i < 3; i++) {
      await run(process.execPath, [CLI, 'user', 'disable', `new${i}`, '--config', cfg])
      await run(process.execPath, [CLI, 'user', 'enable', `new${i}`, '--config', cfg])
    }
    return out
  })()
  // Readers and claimers: the devices log in and out all the while (bounded: 60 rounds or the writers' end).
  let logins = 0
  let done = false
  writers.finally(() => { done = true }).catch(() => {})
  for (let round = 0; round < 60 && !done; round++) {
    await Promise.all(devices.map(async (d) => {
      const c = await h.connect(d, { clientId: `${d}-${round}` })
      logins++
      await c.endAsync()
    }))
  }
  const out = await writers
  t.match(out[0], /imported 3 users/)
  t.ok(logins >= devices.length, `${logins} logins during the writes, none refused`)
  t.same(events(h, 'login.failed'), [], 'no login failed')
  t.same(events(h, 'store.unavailable'), [])
  const c = await h.connect('d0', { clientId: 'after' })
  t.ok(c.connected)
})

t.test('a config still naming the JSON store works, and is told at start how to move to SQLite', async (t) => {
  const h = await startHarness({ auth: { store: { type: 'file', path: 'data/users.json' } } })
  t.teardown(() => h.close())
  await h.addUser('legacy')
  const c = await h.connect('legacy')
  t.ok(c.connected)
  t.match(events(h, 'store.legacy'), [{ level: 40, store: 'file', msg: /type: sqlite, path: .*users\.db/ }])
})
