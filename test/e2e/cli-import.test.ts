// Bulk provisioning as an operator runs it: the built CLI in a folder of its own, `user import`
// from a file or a pipe, `user export` to stdout.
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import { cliFolder, runCli as cli } from '../helpers/cli-folder.js'

const root = mkdtempSync(join(tmpdir(), 'bastion-import-'))
t.teardown(() => rmSync(root, { recursive: true, force: true }))
const folder = (name: string, config?: string): string => cliFolder(root, name, config)

const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'
// Cost 4 keeps the test fast; import takes any cost from 04 to 31.
const BOB_HASH = bcrypt.hashSync('bob-password', 4)

const jsonl = (...users: object[]): string => users.map((u) => JSON.stringify(u) + '\n').join('')
async function list (dir: string): Promise<unknown> {
  return JSON.parse((await cli(dir, ['user', 'list', '--json'])).stdout)
}
async function exported (dir: string): Promise<Array<Record<string, unknown>>> {
  const r = await cli(dir, ['user', 'export'])
  if (r.code !== 0) throw new Error(r.stderr)
  return r.stdout.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l))
}

t.test('import adds plain-password, hashed and disabled users in one go', async (t) => {
  const dir = folder('mix')
  writeFileSync(join(dir, 'users.jsonl'), [
    JSON.stringify({ username: 'alice', password: 'alice-password', totpSecret: 'jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp' }),
    '',
    JSON.stringify({ username: 'bob', passwordHash: BOB_HASH, totpSecret: SECRET, createdAt: '2024-01-02T03:04:05.000Z' }),
    '   ',
    JSON.stringify({ username: 'carol', password: 'carol-password', totpSecret: SECRET, enabled: false, createdAt: '2025-06-01' }),
    ''
  ].join('\r\n'))
  const r = await cli(dir, ['user', 'import', 'users.jsonl'])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, 'imported 3 users (2 passwords hashed)\n')
  t.equal(r.stderr, '', 'no progress when stderr is not a terminal')

  const users = await list(dir) as Array<{ user: string; enabled: boolean; createdAt: string }>
  t.same(users.map((u) => [u.user, u.enabled]), [['alice', true], ['bob', true], ['carol', false]])
  t.equal(users[1]?.createdAt, '2024-01-02T03:04:05.000Z', 'createdAt is kept')
  t.equal(users[2]?.createdAt, '2025-06-01T00:00:00.000Z', 'a date is read as UTC midnight')

  const [alice, bob, carol] = await exported(dir)
  t.match(alice, { username: 'alice', passwordHash: /^\$2[ab]\$12\$/, totpSecret: SECRET, enabled: true })
  t.ok(bcrypt.compareSync('alice-password', alice?.passwordHash as string), 'the plain password was hashed with cost 12')
  t.ok(bcrypt.compareSync('carol-password', carol?.passwordHash as string))
  t.equal(bob?.passwordHash, BOB_HASH, 'a given hash is stored as it is')
  t.same(Object.keys(bob ?? {}), ['username', 'passwordHash', 'totpSecret', 'enabled', 'createdAt'], 'export keys in a fixed order')
})

t.test('user names like Object.prototype members are plain names', async (t) => {
  const dir = folder('proto')
  const names = ['__proto__', 'constructor', 'toString', 'hasOwnProperty']
  const r = await cli(dir, ['user', 'import', '-'], jsonl(...names.map((username) => ({ username, passwordHash: BOB_HASH, totpSecret: SECRET }))))
  t.equal(r.code, 0, r.stderr)
  t.same((await exported(dir)).map((u) => u.username).sort(), [...names].sort())
  // A lookup table that were a plain object would already "know" constructor on line 1.
  const twice = await cli(dir, ['user', 'import', '-'], jsonl(
    { username: 'constructor', passwordHash: BOB_HASH, totpSecret: SECRET },
    { username: 'constructor', passwordHash: BOB_HASH, totpSecret: SECRET }
  ))
  t.equal(twice.stderr, 'mqtt-bastion: line 2: user constructor appears twice (first on line 1)\n')
})

t.test('an export imports into another store, and exports again byte for byte', async (t) => {
  const a = folder('round-a')
  const seed = jsonl(
    { username: 'zed', passwordHash: BOB_HASH, totpSecret: SECRET, enabled: false, createdAt: '2020-02-02T02:02:02.000Z' },
    { username: 'amy', passwordHash: bcrypt.hashSync('amy-password', 4), totpSecret: 'KRSXG5CTMVRXEZLUKRSXG5CTMVRXEZLU' },
    { username: 'Mia', passwordHash: BOB_HASH.replace('$2b$', '$2y$'), totpSecret: SECRET }
  )
  t.equal((await cli(a, ['user', 'import', '-'], seed)).code, 0)
  const first = await cli(a, ['user', 'export'])
  t.equal(first.code, 0, first.stderr)
  t.equal(first.stdout.split('\n').length, 4, 'three lines')

  const users = await list(a)
  // Another SQLite store, and the legacy file store (another implementation of addMany).
  const b = folder('round-b')
  const c = folder('round-c', 'auth:\n  store: { type: file, path: data/users.json }\n')
  for (const dir of [b, c]) {
    const r = await cli(dir, ['user', 'import', '-'], first.stdout)
    t.equal(r.stdout, 'imported 3 users (0 passwords hashed)\n', r.stderr)
    t.equal((await cli(dir, ['user', 'export'])).stdout, first.stdout, 'the same export, byte for byte')
  }
  t.same(await list(b), users, 'and the same users listed')
  t.match((await cli(a, ['user', '--help'])).stdout, /umask 077; mqtt-bastion user export > users\.jsonl/)
})

t.test('a read-only store refuses an import', async (t) => {
  const dir = folder('readonly', 'auth:\n  store: { type: mosquitto-passwd, path: passwd }\n')
  writeFileSync(join(dir, 'passwd'), '', { mode: 0o600 })
  const r = await cli(dir, ['user', 'import', '-'], jsonl({ username: 'amy', passwordHash: BOB_HASH, totpSecret: SECRET }))
  t.equal(r.code, 1)
  t.match(r.stderr, /^mqtt-bastion: the mosquitto-passwd store is read-only/)
  const e = await cli(dir, ['user', 'export'])
  t.equal(e.code, 0, e.stderr)
  t.equal(e.stdout, '', 'an empty store exports nothing')
})
