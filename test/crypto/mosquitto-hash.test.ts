import t from 'tap'
import { execFileSync } from 'node:child_process'
import { pbkdf2Sync, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import {
  MOSQUITTO_DUMMY_HASH, isMosquittoHash, mosquittoDummyHashLike, verifyMosquittoHash
} from '../../src/crypto/mosquitto-hash.js'
import { scratch } from '../helpers/scratch.js'

const scratchDir = scratch('bastion-mosq-hash-')

// Written once by Debian's mosquitto_passwd 2.0.11 (-b f fixture7 'correct horse';
// -H sha512 -b f fixture6 'battery staple'; -b f x 'é ü ☃').
const FIXTURE_7 = '$7$101$j0ok0rpuCaVWrDpF$4XzsRwobkDRZBsVNZhX7n+Kyf6L2p+9CS54AThpXhmF99WuoLtTvYaJNMl82jLinmqld0hu874ATM49Xc/PkrQ=='
const FIXTURE_6 = '$6$cvz6T4W1VP/ZsBnw$RvhQXYaGZnLgflPEX01qOjEvlMuF9HegjoxPVD/Bz9wDQoA1GAfcTiZTAlpu6Zg6MtHQyTxAlfKMDKVLPVtaBQ=='
const FIXTURE_UTF8 = '$7$101$YaeCbXdzp/dFhwKY$2Q8tyfbQYMRwm9zaeFfrcIpp33q6zQjTgh2OJxq93IjU5akL/UjH2TX0kyM0aw96wuVC1mSJs0KeH48gqaCYTg=='

/** Runs the real mosquitto_passwd and returns the hash it wrote for `user`. */
function mosquittoPasswd (kind: 'sha512' | 'sha512-pbkdf2', user: string, password: string): string {
  const file = join(scratchDir(), 'pw')
  execFileSync('mosquitto_passwd', ['-H', kind, '-c', '-b', file, user, password], { stdio: 'pipe', timeout: 10_000 })
  const line = readFileSync(file, 'utf8').trim()
  if (!line.startsWith(`${user}:`) || line.includes('\n')) throw new Error(`unexpected mosquitto_passwd output in ${file}`)
  return line.slice(user.length + 1)
}

t.test('hashes written now by the real mosquitto_passwd verify with the right password only', async (t) => {
  for (const kind of ['sha512-pbkdf2', 'sha512'] as const) {
    const hash = mosquittoPasswd(kind, 'alice', 'Tr0ub4dor&3 with spaces')
    t.match(hash, kind === 'sha512' ? /^\$6\$/ : /^\$7\$101\$/, `${kind} gives the expected prefix`)
    t.equal(isMosquittoHash(hash), true)
    t.equal(await verifyMosquittoHash('Tr0ub4dor&3 with spaces', hash), true, `${kind}: right password`)
    t.equal(await verifyMosquittoHash('Tr0ub4dor&3 with space', hash), false, `${kind}: wrong password`)
    t.equal(await verifyMosquittoHash('', hash), false, `${kind}: empty password`)
    t.equal(await verifyMosquittoHash(Buffer.from('Tr0ub4dor&3 with spaces'), hash), true, `${kind}: password as bytes`)
  }
})

t.test('fixed fixtures from mosquitto_passwd verify without the binary', async (t) => {
  t.equal(await verifyMosquittoHash('correct horse', FIXTURE_7), true)
  t.equal(await verifyMosquittoHash('correct horsE', FIXTURE_7), false)
  t.equal(await verifyMosquittoHash('battery staple', FIXTURE_6), true)
  t.equal(await verifyMosquittoHash('battery stapl', FIXTURE_6), false)
  t.equal(await verifyMosquittoHash('é ü ☃', FIXTURE_UTF8), true, 'non-ASCII passwords are hashed as UTF-8, as Mosquitto does')
  t.equal(await verifyMosquittoHash('e u ☃', FIXTURE_UTF8), false)
})

t.test('a password with a NUL byte never matches, though Mosquitto would compare only its prefix', async (t) => {
  t.equal(await verifyMosquittoHash('correct horse\0anything', FIXTURE_7), false)
  t.equal(await verifyMosquittoHash('battery staple\0', FIXTURE_6), false)
})

t.test('malformed hashes are false, never an exception', async (t) => {
  const [, , iter, salt, hash] = FIXTURE_7.split('$') as [string, string, string, string, string]
  const bad = [
    '', 'correct horse', '$7$', '$7$101$', `$7$101$${salt}`, `$7$101$${salt}$`,
    `$7$0$${salt}$${hash}`, `$7$-1$${salt}$${hash}`, `$7$abc$${salt}$${hash}`, `$7$99999999$${salt}$${hash}`,
    `$7$${iter}$${salt}$${hash}$extra`, `$7$${iter}$${salt}$${hash.slice(0, -4)}`, `$7$${iter}$${salt.slice(0, -1)}$${hash}`,
    `$7$${iter}$${salt}$${hash.replace('4', '*')}`, ` $7$${iter}$${salt}$${hash}`, `$7$${iter}$${salt}$${hash}\n`,
    `$6$${iter}$${salt}$${hash}`, `$8$${salt}$${hash}`, '$2b$12$Ls3.DSKN8Y7j1lenObBnkemha5r00nSmKYu6zHZ0hVaZCyCPSlb6i',
    '$argon2id$v=19$m=47104,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA'
  ]
  for (const h of bad) {
    t.equal(isMosquittoHash(h), false, `not a hash: ${JSON.stringify(h.slice(0, 40))}`)
    t.equal(await verifyMosquittoHash('correct horse', h), false)
  }
})

t.test('a Mosquitto 2.1 style $7$ hash (64-byte salt, 1000 iterations) is understood', async (t) => {
  const salt = randomBytes(64)
  const digest = pbkdf2Sync('pw 2.1', salt, 1000, 64, 'sha512')
  const hash = `$7$1000$${salt.toString('base64')}$${digest.toString('base64')}`
  t.equal(isMosquittoHash(hash), true)
  t.equal(await verifyMosquittoHash('pw 2.1', hash), true)
  t.equal(await verifyMosquittoHash('pw 2.0', hash), false)
})

t.test('the dummy hash is a well-formed default-cost hash that no everyday password matches', async (t) => {
  t.match(MOSQUITTO_DUMMY_HASH, /^\$7\$101\$/)
  t.equal(isMosquittoHash(MOSQUITTO_DUMMY_HASH), true)
  for (const p of ['', 'password', 'dummy', '123456']) t.equal(await verifyMosquittoHash(p, MOSQUITTO_DUMMY_HASH), false)
})

t.test('a dummy like a store\'s own hash has the same kind and cost', async (t) => {
  const like6 = mosquittoDummyHashLike(FIXTURE_6)
  t.match(like6, /^\$6\$/)
  t.equal(isMosquittoHash(like6), true)
  const like7 = mosquittoDummyHashLike(`$7$5000$${Buffer.alloc(12, 1).toString('base64')}$${Buffer.alloc(64, 2).toString('base64')}`)
  t.match(like7, /^\$7\$5000\$/)
  t.equal(isMosquittoHash(like7), true)
  t.not(mosquittoDummyHashLike(FIXTURE_7), mosquittoDummyHashLike(FIXTURE_7), 'fresh random bytes each time')
  t.equal(mosquittoDummyHashLike('not a hash'), MOSQUITTO_DUMMY_HASH)
})
