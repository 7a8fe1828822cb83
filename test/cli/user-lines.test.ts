import t from 'tap'
import { exportLine, parseUserLine } from '../../src/cli/user-lines.js'

const SECRET = 'JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP'
const HASH = '$2b$04$abcdefghijklmnopqrstuuG6P0zOJlBeYg0jzYjRCmFbqjsrM2rvu'
const NOW = '2026-12-01T00:00:00.000Z'
const base = { username: 'alice', passwordHash: HASH, totpSecret: SECRET }
const parse = (doc: unknown, line = 7): unknown => parseUserLine(typeof doc === 'string' ? doc : JSON.stringify(doc), line, NOW)

t.test('a line with a hash or a plain password becomes a user with defaults filled in', async (t) => {
  t.same(parse(base), { line: 7, username: 'alice', passwordHash: HASH, totpSecret: SECRET, enabled: true, createdAt: NOW })
  t.same(parse({ username: 'bob', password: 'bob-password', totpSecret: 'jbsw y3dp ehpk 3pxp jbsw y3dp ehpk 3pxp', enabled: false, createdAt: '2024-01-02T04:04:05+01:00' }),
    { line: 7, username: 'bob', password: 'bob-password', totpSecret: SECRET, enabled: false, createdAt: '2024-01-02T03:04:05.000Z' })
  for (const kind of ['$2a$', '$2y$']) t.match(parse({ ...base, passwordHash: HASH.replace('$2b$', kind) }), { passwordHash: HASH.replace('$2b$', kind) })
  t.match(parse({ ...base, passwordHash: HASH.replace('$04$', '$31$') }), { username: 'alice' }, 'cost 31 is a bcrypt cost')
  t.match(parse({ ...base, createdAt: '2024-02-29' }), { createdAt: '2024-02-29T00:00:00.000Z' }, 'a leap day')
  t.match(parse({ ...base, createdAt: '2024-02-29 10:11Z' }), { createdAt: '2024-02-29T10:11:00.000Z' }, 'a space for the T, no seconds')
})

t.test('each kind of bad line fails naming the line and the field, never quoting a credential', async (t) => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['truncated JSON', '{"username":"alice","password":"hunter2-secret"', /^line 7: not JSON$/],
    ['a JSON string', '"alice"', /^line 7: not a JSON object$/],
    ['null', 'null', /^line 7: not a JSON object$/],
    ['an array', [base], /^line 7: not a JSON object$/],
    ['lastStep', { ...base, lastStep: 1 }, /^line 7: unknown key "lastStep" \(allowed: username, passwordHash, password, totpSecret, enabled, createdAt\)$/],
    ['a __proto__ key', `{"__proto__":{"enabled":false},"username":"alice","passwordHash":"${HASH}","totpSecret":"${SECRET}"}`, /^line 7: unknown key "__proto__"/],
    ['a long unknown key', { ...base, ['k'.repeat(500)]: 1 }, /^line 7: unknown key "k{64}\.\.\." /],
    ['no username', { passwordHash: HASH, totpSecret: SECRET }, /^line 7: username is missing$/],
    ['a null username', { ...base, username: null }, /^line 7: username must be a string$/],
    ['an empty username', { ...base, username: '' }, /^line 7: invalid user name "":/],
    ['a username with a slash', { ...base, username: 'a/b' }, /^line 7: invalid user name "a\/b"/],
    ['a username with a control character', { ...base, username: 'a\u001b[31m' }, /^line 7: invalid user name "a\\u001b\[31m"/],
    ['a 65-character username', { ...base, username: 'a'.repeat(65) }, /^line 7: invalid user name/],
    ['no credential', { username: 'alice', totpSecret: SECRET }, /^line 7: needs password or passwordHash$/],
    ['both credentials', { ...base, password: 'alice-password' }, /^line 7: has both password and passwordHash: give one$/],
    ['a Mosquitto hash', { ...base, passwordHash: '$7$101$abc$def' }, /^line 7: passwordHash is not a bcrypt hash/],
    ['a bcrypt hash of cost 32', { ...base, passwordHash: HASH.replace('$04$', '$32$') }, /^line 7: passwordHash is not a bcrypt hash/],
    ['a truncated bcrypt hash', { ...base, passwordHash: HASH.slice(0, 59) }, /^line 7: passwordHash is not a bcrypt hash/],
    ['a $2x$ hash', { ...base, passwordHash: HASH.replace('$2b$', '$2x$') }, /^line 7: passwordHash is not a bcrypt hash/],
    ['a numeric hash', { ...base, passwordHash: 5 }, /^line 7: passwordHash is not a bcrypt hash/],
    ['a short password', { username: 'alice', password: 'hunter2', totpSecret: SECRET }, /^line 7: password too short: at least 8 characters$/],
    ['a 73-byte password', { username: 'alice', password: 'hunter2-'.repeat(9) + 'x', totpSecret: SECRET }, /^line 7: password too long: bcrypt uses only the first 72 bytes \(this one has 73\)$/],
    ['a 30-character, 90-byte password', { username: 'alice', password: '€'.repeat(30), totpSecret: SECRET }, /\(this one has 90\)$/],
    ['a password array', { username: 'alice', password: ['hunter2-secret'], totpSecret: SECRET }, /^line 7: password must be a string$/],
    ['no secret', { username: 'alice', passwordHash: HASH }, /^line 7: totpSecret is missing/],
    ['a short secret', { ...base, totpSecret: 'JBSWY3DP' }, /^line 7: totpSecret must be base32/],
    ['a secret with 1 and 8', { ...base, totpSecret: SECRET.replace('J', '1').replace('B', '8') }, /^line 7: totpSecret must be base32/],
    ['a numeric secret', { ...base, totpSecret: 12 }, /^line 7: totpSecret must be base32/],
    ['enabled 1', { ...base, enabled: 1 }, /^line 7: enabled must be true or false$/],
    ['enabled null', { ...base, enabled: null }, /^line 7: enabled must be true or false$/],
    ['createdAt a number', { ...base, createdAt: 1700000000 }, /^line 7: createdAt must be an ISO 8601 date/],
    ['createdAt without an offset', { ...base, createdAt: '2024-01-02T03:04:05' }, /^line 7: createdAt must be an ISO 8601 date/],
    ['createdAt on April 31', { ...base, createdAt: '2024-04-31' }, /^line 7: createdAt must be an ISO 8601 date/],
    ['createdAt at 24:00', { ...base, createdAt: '2024-04-30T24:00:00Z' }, /^line 7: createdAt must be an ISO 8601 date/],
    ['createdAt in words', { ...base, createdAt: 'Tue, 01 Dec 2026 00:00:00 GMT' }, /^line 7: createdAt must be an ISO 8601 date/]
  ]
  for (const [what, doc, message] of cases) {
    try {
      parse(doc)
      t.fail(`${what} is refused`)
    } catch (err) {
      t.match(err, { code: 'BASTION_ERR_INVALID_INPUT', message }, what)
      t.notMatch((err as Error).message, /hunter2|€|\$2[abxy]\$\d\d\$|\$7\$|JBSWY3DP/, `${what}: no credential in the message`)
    }
  }
})

t.test('an export line has the import keys in a fixed order and nothing else', async (t) => {
  const full = { username: 'alice', passwordHash: HASH, totpSecret: SECRET, enabled: false, createdAt: NOW, lastStep: 99 }
  t.equal(exportLine(full), `{"username":"alice","passwordHash":"${HASH}","totpSecret":"${SECRET}","enabled":false,"createdAt":"${NOW}"}`)
  t.equal(exportLine({ username: 'bob', passwordHash: HASH, enabled: true, createdAt: '' }), `{"username":"bob","passwordHash":"${HASH}","enabled":true}`,
    'no totpSecret where the store has none, no empty createdAt')
  t.same(parse(exportLine(full)), { line: 7, username: 'alice', passwordHash: HASH, totpSecret: SECRET, enabled: false, createdAt: NOW }, 'and imports back')
})
