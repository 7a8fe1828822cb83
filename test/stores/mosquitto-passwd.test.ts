import t from 'tap'
import { execFileSync } from 'node:child_process'
import { appendFileSync, chmodSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { MOSQUITTO_DUMMY_HASH, isMosquittoHash, verifyMosquittoHash } from '../../src/crypto/mosquitto-hash.js'
import { MOSQUITTO_PASSWD_READ_ONLY, createMosquittoPasswdStore } from '../../src/stores/mosquitto-passwd.js'
import { scratch } from '../helpers/scratch.js'

const scratchDir = scratch('bastion-mosq-pw-')

// Written once by mosquitto_passwd 2.0.11 ('correct horse' / -H sha512 'battery staple').
const H7 = '$7$101$j0ok0rpuCaVWrDpF$4XzsRwobkDRZBsVNZhX7n+Kyf6L2p+9CS54AThpXhmF99WuoLtTvYaJNMl82jLinmqld0hu874ATM49Xc/PkrQ=='
const H6 = '$6$cvz6T4W1VP/ZsBnw$RvhQXYaGZnLgflPEX01qOjEvlMuF9HegjoxPVD/Bz9wDQoA1GAfcTiZTAlpu6Zg6MtHQyTxAlfKMDKVLPVtaBQ=='
const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'

const dir = (): string => scratchDir()

function mosquittoPasswd (...args: string[]): void {
  execFileSync('mosquitto_passwd', args, { stdio: 'pipe', timeout: 10_000 })
}

function privateFile (path: string, text: string): string {
  writeFileSync(path, text, { mode: 0o600 })
  return path
}

t.test('a file written by the real mosquitto_passwd loads, both hash kinds, and its hashes verify', async (t) => {
  const path = join(dir(), 'passwd')
  mosquittoPasswd('-c', '-b', path, 'alice', 'alice pw')
  t.throws(() => createMosquittoPasswdStore({ path }), { code: 'BASTION_ERR_FILE_PERMISSIONS', message: `chmod 600 ${path}` },
    'mosquitto_passwd -c leaves the file readable by others (umask 022): refused until chmod 600')
  chmodSync(path, 0o600)
  mosquittoPasswd('-b', path, 'bob', 'bob pw')
  mosquittoPasswd('-H', 'sha512', '-b', path, 'carol', 'carol pw')
  mosquittoPasswd('-H', 'sha512-pbkdf2', '-b', path, 'dave.d-1_x', 'dave pw')
  t.equal(statSync(path).mode & 0o777, 0o600, 'mosquitto_passwd kept the mode')

  const store = createMosquittoPasswdStore({ path })
  t.same((await store.list()).map((u) => u.username), ['alice', 'bob', 'carol', 'dave.d-1_x'])
  const alice = await store.find('alice')
  t.match(alice, { username: 'alice', enabled: true, passwordHash: /^\$7\$101\$/ })
  t.equal(alice?.totpSecret, undefined, 'no TOTP file, no secret')
  t.equal(alice?.createdAt, statSync(path).mtime.toISOString())
  t.match((await store.find('carol'))?.passwordHash, /^\$6\$/)
  t.equal(await store.find('nobody'), undefined)
  t.equal(await store.find('Alice'), undefined, 'names are case-sensitive, as in Mosquitto')
  for (const u of ['alice', 'bob', 'carol', 'dave.d-1_x']) {
    const hash = (await store.find(u))?.passwordHash ?? ''
    const password = `${u.split('.')[0] ?? ''} pw`
    t.equal(await verifyMosquittoHash(password, hash), true, `${u}: right password`)
    t.equal(await verifyMosquittoHash(password + '!', hash), false, `${u}: wrong password`)
  }
  await store.ping()
  await store.close()
})

t.test('reload picks up a user added and drops a user deleted with mosquitto_passwd', async (t) => {
  const path = join(dir(), 'passwd')
  mosquittoPasswd('-c', '-b', path, 'alice', 'a')
  chmodSync(path, 0o600)
  mosquittoPasswd('-b', path, 'bob', 'b')
  const store = createMosquittoPasswdStore({ path })
  mosquittoPasswd('-b', path, 'eve', 'e')
  mosquittoPasswd('-D', path, 'bob')
  mosquittoPasswd('-b', path, 'alice', 'new a')
  t.equal(await store.find('eve'), undefined, 'nothing changes before the reload')
  t.ok(await store.find('bob'))
  await store.reload()
  t.same((await store.list()).map((u) => u.username), ['alice', 'eve'])
  t.equal(await store.find('bob'), undefined)
  t.equal(await verifyMosquittoHash('new a', (await store.find('alice'))?.passwordHash ?? ''), true, 'a changed password is seen')
})

t.test('a broken file at reload is refused and the users loaded before stay', async (t) => {
  const path = privateFile(join(dir(), 'passwd'), `alice:${H7}\n`)
  const store = createMosquittoPasswdStore({ path })
  appendFileSync(path, 'frank:hunter2\n')
  await t.rejects(store.reload(), { code: 'BASTION_ERR_CONFIG', message: `password file ${path}:2: not a password hash` })
  await store.reload().catch((err: Error) => t.notMatch(err.message, 'hunter2', 'the bad line is never quoted'))
  t.equal((await store.find('alice'))?.passwordHash, H7)
  t.equal(await store.find('frank'), undefined)
  chmodSync(path, 0o644)
  await t.rejects(store.reload(), { code: 'BASTION_ERR_FILE_PERMISSIONS', message: `password file ${path} is readable by group or others` })
  writeFileSync(path, `alice:${H7}\nfrank:${H6}\n`, { mode: 0o600 })
  chmodSync(path, 0o600)
  await store.reload()
  t.ok(await store.find('frank'), 'a fixed file loads')
})

t.test('bad lines are refused with file:line and without their content', async (t) => {
  const cases: Array<[string, number, RegExp]> = [
    ['hunter2secret', 1, /not a user:value line/],
    [`ok:${H7}\nalice:hunter2secret`, 2, /plain-text password\? hash the file with mosquitto_passwd -U/],
    [`alice:$argon2id$v=19$m=47104,t=1,p=1$aHVudGVyMnNlY3JldA$aHVudGVyMnNlY3JldGhhc2g`, 1, /argon2id hash \(Mosquitto 2\.1 default\) cannot be verified/],
    [`alice:${H7.slice(0, -10)}hunter2secret`, 1, /malformed \$7\$ hash/],
    [`alice:${H6.replace('$6$', '$6$hunter2secret$')}`, 1, /malformed \$6\$ hash/],
    ['alice:$2b$12$hunter2secretLs3.DSKN8Y7j1lenObBnkemha5r00nSmKYu6zHZ0hVaZCyCP', 1, /unknown hash kind/],
    [`alice:${H7}:hunter2secret`, 1, /malformed \$7\$ hash/],
    [`# users\n\nmetrics/+:${H7}`, 3, /user name must be/],
    [`a#:${H7}`, 1, /user name must be/],
    [`$SYS:${H7}`, 1, /user name must be/],
    [`:${H7}`, 1, /user name must be/],
    [`${'a'.repeat(65)}:${H7}`, 1, /user name must be/],
    [`alice:`, 1, /not a password hash/]
  ]
  for (const [text, line, problem] of cases) {
    const path = privateFile(join(dir(), 'passwd'), text + '\n')
    const err = (() => { try { createMosquittoPasswdStore({ path }) } catch (e) { return e as Error & { code?: string } } })()
    t.equal(err?.code, 'BASTION_ERR_CONFIG', `line ${line} of ${JSON.stringify(text.slice(0, 30))}`)
    t.match(err?.message, `password file ${path}:${line}: `)
    t.match(err?.message, problem)
    t.notMatch(err?.message, 'hunter2secret')
  }
})

t.test('comments, blank lines, CRLF and blanks around fields are accepted as Mosquitto does', async (t) => {
  const path = privateFile(join(dir(), 'passwd'), `# made by hand\r\n\r\n   \r\n  # indented comment\r\n alice : ${H7} \r\n\tcarol:${H6}\r\n`)
  const store = createMosquittoPasswdStore({ path })
  t.same((await store.list()).map((u) => u.username), ['alice', 'carol'])
  t.equal((await store.find('alice'))?.passwordHash, H7)
  t.equal(await verifyMosquittoHash('battery staple', (await store.find('carol'))?.passwordHash ?? ''), true)
})

t.test('a user listed twice gets the last line, as Mosquitto 2.0 answers', async (t) => {
  const path = privateFile(join(dir(), 'passwd'), `alice:${H6}\nbob:${H6}\nalice:${H7}\n`)
  const store = createMosquittoPasswdStore({ path })
  t.equal((await store.find('alice'))?.passwordHash, H7)
  t.equal((await store.list()).length, 2)
})

t.test('a missing or group-readable file stops the store at creation', async (t) => {
  const missing = join(dir(), 'nope')
  t.throws(() => createMosquittoPasswdStore({ path: missing }), { code: 'BASTION_ERR_CONFIG', message: `password file ${missing} cannot be read` })
  const path = privateFile(join(dir(), 'passwd'), `alice:${H7}\n`)
  chmodSync(path, 0o640)
  t.throws(() => createMosquittoPasswdStore({ path }), { code: 'BASTION_ERR_FILE_PERMISSIONS', message: `password file ${path} is readable by group or others (mode 640); fix it with: chmod 600 ${path}` })
})

t.test('a totp file gives secrets to users of the password file', async (t) => {
  const d = dir()
  const path = privateFile(join(d, 'passwd'), `alice:${H7}\nbob:${H7}\ncarol:${H6}\n`)
  const totpFile = privateFile(join(d, 'totp'), `# TOTP secrets\n\nalice:${SECRET}\nbob : ${SECRET.toLowerCase().replace(/(.{4})/g, '$1 ')}\n`)
  const store = createMosquittoPasswdStore({ path, totpFile })
  t.equal((await store.find('alice'))?.totpSecret, SECRET)
  t.equal((await store.find('bob'))?.totpSecret, SECRET, 'lower case and spaces are normalized, as user add does')
  t.equal((await store.find('carol'))?.totpSecret, undefined, 'a user without a line has no secret')

  const bad: Array<[string, number, RegExp]> = [
    [`dave:${SECRET}`, 1, new RegExp(`user is not in the password file ${path}`)],
    [`alice:${SECRET}\nalice:${SECRET}`, 2, /user already given a secret on line 1/],
    ['alice:HUNTER2SECRET', 1, /secret must be base32/],
    ['alice:HUNTER1SECRETHUNTER1SECRET', 1, /secret must be base32/],
    ['HUNTER2SECRETHUNTER2SECRET', 1, /not a user:value line/],
    ['bad/user:' + SECRET, 1, /user name must be/]
  ]
  for (const [text, line, problem] of bad) {
    writeFileSync(totpFile, text + '\n')
    const err = (() => { try { createMosquittoPasswdStore({ path, totpFile }) } catch (e) { return e as Error & { code?: string } } })()
    t.equal(err?.code, 'BASTION_ERR_CONFIG')
    t.match(err?.message, `totp file ${totpFile}:${line}: `)
    t.match(err?.message, problem)
    t.notMatch(err?.message, /HUNTER|JBSW/i, 'the secret is never quoted')
    await t.rejects(store.reload(), { code: 'BASTION_ERR_CONFIG' }, 'and at reload')
    t.equal((await store.find('alice'))?.totpSecret, SECRET, 'the old secrets stay')
  }
  chmodSync(totpFile, 0o604)
  t.throws(() => createMosquittoPasswdStore({ path, totpFile }), { code: 'BASTION_ERR_FILE_PERMISSIONS', message: `totp file ${totpFile} is readable` })
  t.throws(() => createMosquittoPasswdStore({ path, totpFile: join(d, 'nope') }), { code: 'BASTION_ERR_CONFIG', message: 'totp file ' })
})

t.test('the store is read-only and says how to change it', async (t) => {
  const store = createMosquittoPasswdStore({ path: privateFile(join(dir(), 'passwd'), `alice:${H7}\n`) })
  t.equal(store.readOnly, MOSQUITTO_PASSWD_READ_ONLY)
  t.match(store.readOnly, /mosquitto_passwd.*SIGHUP/)
  const rec = { username: 'bob', passwordHash: H7, enabled: true, createdAt: '' }
  await t.rejects(store.add(rec), { code: 'BASTION_ERR_INVALID_INPUT', message: MOSQUITTO_PASSWD_READ_ONLY })
  await t.rejects(store.update('alice', { enabled: false }), { code: 'BASTION_ERR_INVALID_INPUT', message: MOSQUITTO_PASSWD_READ_ONLY })
  await t.rejects(store.remove('alice'), { code: 'BASTION_ERR_INVALID_INPUT', message: MOSQUITTO_PASSWD_READ_ONLY })
  t.ok(await store.find('alice'))
})

t.test('a TOTP step is claimed once, also by concurrent logins and across a reload', async (t) => {
  const path = privateFile(join(dir(), 'passwd'), `alice:${H7}\n`)
  const store = createMosquittoPasswdStore({ path })
  const results = await Promise.all([store.claimStep('alice', 100), store.claimStep('alice', 100), store.claimStep('alice', 100)])
  t.equal(results.filter(Boolean).length, 1, 'exactly one of three concurrent claims wins')
  t.equal(await store.claimStep('alice', 99), false, 'an older step is refused')
  t.equal((await store.find('alice'))?.lastStep, 100)
  await store.reload()
  t.equal(await store.claimStep('alice', 100), false, 'the claim survived the reload')
  t.equal(await store.claimStep('alice', 101), true)
  t.equal(readFileSync(path, 'utf8'), `alice:${H7}\n`, 'the file is never written')
})

t.test('the dummy hash has the kind and cost of the file\'s own hashes', async (t) => {
  const d = dir()
  t.equal(createMosquittoPasswdStore({ path: privateFile(join(d, 'a'), `alice:${H7}\n`) }).dummyHash, MOSQUITTO_DUMMY_HASH)
  t.equal(createMosquittoPasswdStore({ path: privateFile(join(d, 'b'), '# nobody yet\n') }).dummyHash, MOSQUITTO_DUMMY_HASH)
  const sha = createMosquittoPasswdStore({ path: privateFile(join(d, 'c'), `alice:${H6}\nbob:${H6}\ncarol:${H7}\n`) }).dummyHash ?? ''
  t.match(sha, /^\$6\$/, 'mostly -H sha512 users: a $6$ dummy')
  t.equal(isMosquittoHash(sha), true)
  t.equal(await verifyMosquittoHash('battery staple', sha), false)
  const store = createMosquittoPasswdStore({ path: privateFile(join(d, 'e'), `alice:${H6}\n`) })
  writeFileSync(join(d, 'e'), `alice:${H7}\n`)
  await store.reload()
  t.equal(store.dummyHash, MOSQUITTO_DUMMY_HASH, 'follows the file across a reload')
})
