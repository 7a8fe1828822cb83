// bcrypt reads only the first 72 bytes of a password: every way a password enters the store
// (user add, its piped form, user passwd, user import) refuses a longer one, counting bytes of
// UTF-8, not characters, and accepts exactly 72.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import { cliFolder, runCli as cli } from '../helpers/cli-folder.js'

const root = mkdtempSync(join(tmpdir(), 'bastion-pwlen-'))
t.teardown(() => rmSync(root, { recursive: true, force: true }))

const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'
// 30 characters, 90 bytes: a character count would let it through.
const EURO_90 = '€'.repeat(30)
const EURO_72 = '€'.repeat(24)
const tooLong = (n: number): string => `password too long: bcrypt uses only the first 72 bytes (this one has ${n})`

t.test('user add and user passwd refuse a password over 72 bytes and accept 72', async (t) => {
  const dir = cliFolder(root, 'add')
  t.equal((await cli(dir, ['user', 'add', 'amy', '--password', EURO_90])).stderr, `mqtt-bastion: ${tooLong(90)}\n`)
  const piped = await cli(dir, ['user', 'add', 'amy'], EURO_90 + '\n')
  t.equal(piped.code, 1)
  t.equal(piped.stderr, `mqtt-bastion: ${tooLong(90)}\n`, 'a piped password too')
  const added = await cli(dir, ['user', 'add', 'amy', '--password', EURO_72, '--json'])
  t.equal(added.code, 0, added.stderr)

  const passwd = await cli(dir, ['user', 'passwd', 'amy', '--password', 'p'.repeat(73)])
  t.equal(passwd.code, 1)
  t.equal(passwd.stderr, `mqtt-bastion: ${tooLong(73)}\n`)
  t.equal((await cli(dir, ['user', 'passwd', 'amy', '--password', 'q'.repeat(72)])).code, 0)
  const [amy] = (await cli(dir, ['user', 'export'])).stdout.split('\n').map((l) => l === '' ? {} : JSON.parse(l))
  t.ok(bcrypt.compareSync('q'.repeat(72), amy.passwordHash), 'passwd stored the 72-byte password')
})

t.test('user import refuses a password over 72 bytes and accepts 72', async (t) => {
  const dir = cliFolder(root, 'import')
  const line = (password: string): string => JSON.stringify({ username: 'ben', password, totpSecret: SECRET }) + '\n'
  const long = await cli(dir, ['user', 'import', '-'], line(EURO_90))
  t.equal(long.code, 1)
  t.equal(long.stderr, `mqtt-bastion: line 1: ${tooLong(90)}\n`)
  const ok = await cli(dir, ['user', 'import', '-'], line(EURO_72))
  t.equal(ok.stdout, 'imported 1 user (1 password hashed)\n', ok.stderr)
  const ben = JSON.parse((await cli(dir, ['user', 'export'])).stdout)
  t.ok(bcrypt.compareSync(EURO_72, ben.passwordHash), 'import stored the 72-byte password')
})

t.test('user add with nothing on a piped standard input says what it expected, not "too short"', async (t) => {
  const dir = cliFolder(root, 'empty')
  const r = await cli(dir, ['user', 'add', 'ben'], '')
  t.equal(r.code, 1)
  t.match(r.stderr, /^mqtt-bastion: no password: give --password P, or pipe it on standard input/)
  t.equal((await cli(dir, ['user', 'list'])).stdout, 'no users\n', 'nobody was added')
})
