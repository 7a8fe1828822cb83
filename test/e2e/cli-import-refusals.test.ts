// What `user import` refuses, run as an operator runs it: each kind of bad input exits 1 with one
// line naming the line and what is wrong, never a credential, and the store keeps what it had.
// Every other kind of bad field is checked in test/cli/user-lines.test.ts, without a process each.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import { cliFolder, runCli as cli } from '../helpers/cli-folder.js'

const root = mkdtempSync(join(tmpdir(), 'bastion-import-refusals-'))
t.teardown(() => rmSync(root, { recursive: true, force: true }))
const folder = (name: string): string => cliFolder(root, name)

const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'
const BOB_HASH = bcrypt.hashSync('bob-password', 4)
const jsonl = (...users: object[]): string => users.map((u) => JSON.stringify(u) + '\n').join('')
async function list (dir: string): Promise<unknown> {
  return JSON.parse((await cli(dir, ['user', 'list', '--json'])).stdout)
}

t.test('a bad line imports nothing and the error names its line', async (t) => {
  const dir = folder('bad')
  const ok = (name: string): object => ({ username: name, passwordHash: BOB_HASH, totpSecret: SECRET })
  t.equal((await cli(dir, ['user', 'import', '-'], jsonl(ok('dave')))).code, 0, 'dave is there before')
  const before = await list(dir)
  const cases: Array<[string, string | Buffer, RegExp]> = [
    ['not JSON', '{"username":"x","password":"hunter2-secret"\n', /^line 1: not JSON$/],
    ['an unknown key', jsonl(ok('x1'), { ...ok('x2'), lastStep: 5 }), /^line 2: unknown key "lastStep"/],
    ['a __proto__ key', `{"__proto__": {"enabled": false}, "username": "x3", "password": "x3-password", "totpSecret": "${SECRET}"}\n`, /^line 1: unknown key "__proto__"/],
    ['a hash that is not bcrypt', jsonl(ok('x4'), { ...ok('x5'), passwordHash: '$6$salt$notbcrypt' }), /^line 2: passwordHash is not a bcrypt hash/],
    ['a user twice', jsonl(ok('x6'), ok('x7'), ok('x6')), /^line 3: user x6 appears twice \(first on line 1\)$/],
    ['a user twice in different case', jsonl(ok('x8'), ok('X8')), /^line 2: user X8 appears twice \(first on line 1 as x8\)$/],
    ['a user already in the store', jsonl({ username: 'x9', password: 'x9-password', totpSecret: SECRET }, ok('dave')), /^line 2: user dave already exists in the store: nothing was imported$/],
    ['a user already in the store in another case', jsonl(ok('Dave')), /^line 1: user Dave already exists in the store \(as dave\): nothing was imported$/],
    ['a line over 64 KiB', jsonl(ok('x10')) + `{"username":"x11","pad":"${'a'.repeat(70_000)}"}\n`, /^line 2: longer than 65536 bytes$/],
    ['more than a million lines', jsonl(ok('x12')) + '\n'.repeat(1_000_000), /^standard input has more than 1000000 lines/],
    ['bytes that are not UTF-8', Buffer.concat([Buffer.from(jsonl(ok('x13'))), Buffer.from([0x7b, 0xff, 0x7d, 0x0a])]), /^line 2: not UTF-8 text$/]
  ]
  for (const [what, input, message] of cases) {
    const r = await cli(dir, ['user', 'import', '-'], input)
    t.equal(r.code, 1, `${what}: exit code 1`)
    t.match(r.stderr, /^mqtt-bastion: [^\n]*\n$/, `${what}: one line on stderr`)
    t.match(r.stderr.replace(/^mqtt-bastion: /, '').trimEnd(), message, what)
    t.notMatch(r.stderr, /hunter2|password"|\$2[aby]\$\d\d\$|JBSWY3DP/, `${what}: no password, hash or secret in the message`)
    t.equal(r.stdout, '', `${what}: nothing on stdout`)
  }
  t.same(await list(dir), before, 'the store holds what it held before')

  const missing = await cli(dir, ['user', 'import', 'no-such-file.jsonl'])
  t.equal(missing.code, 1)
  t.match(missing.stderr, /^mqtt-bastion: cannot read no-such-file\.jsonl: ENOENT/)
  t.equal((await cli(dir, ['user', 'import'])).code, 2, 'FILE is required')
})

t.test('a bad line in an import into an empty store leaves it empty', async (t) => {
  const dir = folder('empty')
  const r = await cli(dir, ['user', 'import', '-'], jsonl(
    { username: 'alice', password: 'alice-password', totpSecret: SECRET },
    { username: 'bob', passwordHash: 'x', totpSecret: SECRET }
  ))
  t.equal(r.code, 1)
  t.equal(r.stderr, 'mqtt-bastion: line 2: passwordHash is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 04-31, 60 characters)\n')
  t.same(await list(dir), [])
})
