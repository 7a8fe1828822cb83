import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { createMosquittoAclPolicy, parseMosquittoAcl } from '../../src/acl/mosquitto-acl.js'
import type { Action, Identity } from '../../src/types.js'

const dir = mkdtempSync(join(tmpdir(), 'mosquitto-acl-test-'))
t.teardown(() => rmSync(dir, { recursive: true, force: true }))
let files = 0
function aclFile (text: string): string {
  const file = join(dir, `acl-${++files}`)
  writeFileSync(file, text)
  return file
}

const FIXTURE = `# a comment, then the anonymous section (never used by this broker)
topic read public/#

user alice
topic readwrite alice/#
topic read shared/+/status
topic write inbox/bob
topic deny alice/secret/#
topic read space in/topic name

user bob
topic read $SYS/broker/#
topic readwrite bob/#

pattern readwrite devices/%u/%c/#
pattern read clients/%c
pattern deny devices/%u/locked
`

function who (user: string, clientId = `${user}-1`): Identity {
  return { user, clientId, remoteAddress: '127.0.0.1', hasWill: false }
}

function policyOf (text: string, allowSys = false): ReturnType<typeof createMosquittoAclPolicy> {
  return createMosquittoAclPolicy({ file: aclFile(text), allowSys })
}

const policy = policyOf(FIXTURE)
const can = (id: Identity, action: Action, topic: string, p = policy): boolean => {
  const d = p.decide(id, action, topic)
  if (d instanceof Promise) throw new Error('decide must be synchronous')
  return d.allow
}

t.test('readwrite, read and write lines grant exactly their access', async (t) => {
  const alice = who('alice')
  t.ok(can(alice, 'publish', 'alice/x'))
  t.ok(can(alice, 'read', 'alice/x/y'))
  t.ok(can(alice, 'read', 'alice'), 'alice/# also matches alice')
  t.ok(can(alice, 'read', 'shared/7/status'))
  t.notOk(can(alice, 'publish', 'shared/7/status'), 'read-only')
  t.ok(can(alice, 'publish', 'inbox/bob'))
  t.notOk(can(alice, 'read', 'inbox/bob'), 'write-only')
  t.notOk(can(alice, 'read', 'shared/7/status/x'), '+ is one level')
  t.notOk(can(alice, 'publish', 'bob/x'), 'another user section')
})

t.test('a deny line wins over a readwrite line whatever their order', async (t) => {
  const alice = who('alice')
  t.notOk(can(alice, 'publish', 'alice/secret/k'))
  t.notOk(can(alice, 'read', 'alice/secret'))
  t.same(policy.decide(alice, 'read', 'alice/secret/k'), { allow: false, reason: 'denied by acl deny rule' })
  const p = policyOf('user a\ntopic deny x/1\ntopic readwrite x/#\n')
  t.notOk(can(who('a'), 'publish', 'x/1', p))
  t.ok(can(who('a'), 'publish', 'x/2', p))
})

t.test('a denial says which access no line granted', async (t) => {
  t.same(policy.decide(who('alice'), 'publish', 'nowhere'), { allow: false, reason: 'no acl grants write' })
  t.same(policy.decide(who('alice'), 'read', 'nowhere'), { allow: false, reason: 'no acl grants read' })
})

t.test('a topic may contain spaces after the access word', async (t) => {
  t.ok(can(who('alice'), 'read', 'space in/topic name'))
  const acl = parseMosquittoAcl('user u\ntopic read   a b  \r\n', 'x')
  t.same(acl.users.get('u'), [{ filter: 'a b', access: 1 }])
})

t.test('patterns apply to every user with %u and %c substituted', async (t) => {
  const carol = who('carol', 'sensor-9')
  t.ok(can(carol, 'publish', 'devices/carol/sensor-9/temp'))
  t.ok(can(carol, 'read', 'clients/sensor-9'))
  t.notOk(can(carol, 'publish', 'clients/sensor-9'), 'read-only pattern')
  t.notOk(can(carol, 'publish', 'devices/dave/sensor-9/temp'), '%u is the user')
  t.notOk(can(carol, 'publish', 'devices/carol/sensor-8/temp'), '%c is the client id')
  t.ok(can(who('alice', 'a1'), 'publish', 'devices/alice/a1/x'), 'users with a section get patterns too')
})

t.test('a deny pattern wins over pattern grants but not over the user section', async (t) => {
  t.notOk(can(who('carol', 'locked'), 'publish', 'devices/carol/locked'))
  t.same(policy.decide(who('carol', 'locked'), 'read', 'devices/carol/locked'), { allow: false, reason: 'denied by acl deny pattern' })
  // Mosquitto checks the user's own lines first and stops at a grant.
  const p = policyOf('user a\ntopic readwrite d/a/locked\npattern deny d/%u/locked\npattern readwrite d/%u/#\n')
  t.ok(can(who('a'), 'publish', 'd/a/locked', p))
  t.notOk(can(who('b'), 'publish', 'd/b/locked', p))
  t.ok(can(who('b'), 'publish', 'd/b/open', p))
})

t.test('a user section deny beats a pattern grant', async (t) => {
  const p = policyOf('user a\ntopic deny d/a/x\npattern readwrite d/%u/#\n')
  t.notOk(can(who('a'), 'publish', 'd/a/x', p))
  t.ok(can(who('a'), 'publish', 'd/a/y', p))
})

t.test('a client id with + # or / gets no pattern access, but keeps its user lines', async (t) => {
  for (const id of ['a+b', 'a#', 'x/y']) {
    t.notOk(can(who('carol', id), 'read', `clients/${id}`), id)
    t.ok(can(who('alice', id), 'publish', 'alice/x'), `${id} still has the alice section`)
  }
  t.same(policy.decide(who('carol', 'x/y'), 'read', 'clients/x/y'), { allow: false, reason: 'user name or client id contains + # or /' })
  // Without any pattern line, Mosquitto does not look at the characters.
  const p = policyOf('user a\ntopic read x/#\n')
  t.ok(can(who('a', 'c+1'), 'read', 'x/1', p))
})

t.test('wildcards in rules follow MQTT matching', async (t) => {
  const p = policyOf('user a\ntopic read +/x\ntopic read y/+/z/#\ntopic write #\n')
  const a = who('a')
  t.ok(can(a, 'read', 'q/x', p))
  t.ok(can(a, 'read', '/x', p), '+ matches an empty level')
  t.notOk(can(a, 'read', 'q/r/x', p))
  t.ok(can(a, 'read', 'y/1/z', p), '# matches the parent')
  t.ok(can(a, 'read', 'y/1/z/2/3', p))
  t.notOk(can(a, 'read', 'y/1', p))
  t.ok(can(a, 'publish', 'any/thing/at/all', p))
  t.notOk(can(a, 'publish', '$SYS/x', p), '# never matches $ topics')
})

t.test('every subscription is granted and each delivery is checked, as in Mosquitto 2.0', async (t) => {
  const alice = who('alice')
  for (const f of ['#', '+/x', 'alice/#', 'bob/#', 'nothing/granted']) t.ok(can(alice, 'subscribe', f), f)
  t.ok(can(who('nobody'), 'subscribe', 'a/b'), 'even for a user without lines')
  t.notOk(can(alice, 'read', 'bob/x'))
})

t.test('$ topics stay closed when allowSys is false, even if the file grants them', async (t) => {
  const bob = who('bob')
  t.notOk(can(bob, 'subscribe', '$SYS/broker/#'))
  t.notOk(can(bob, 'read', '$SYS/broker/uptime'))
  t.same(policy.decide(bob, 'read', '$SYS/broker/uptime'), { allow: false, reason: 'reserved $ topic' })
  t.notOk(can(bob, 'subscribe', '$share/g/bob/#'))
})

t.test('with allowSys, $SYS is readable where the file grants it and never writable', async (t) => {
  const p = policyOf(FIXTURE, true)
  const bob = who('bob')
  t.ok(can(bob, 'subscribe', '$SYS/broker/#', p))
  t.ok(can(bob, 'subscribe', '$SYS/#', p), 'overlaps the grant')
  t.ok(can(bob, 'read', '$SYS/broker/uptime', p))
  t.notOk(can(bob, 'read', '$SYS/other', p))
  t.notOk(can(bob, 'subscribe', '$SYS/other/#', p))
  t.notOk(can(bob, 'publish', '$SYS/broker/uptime', p))
  t.notOk(can(who('alice'), 'subscribe', '$SYS/#', p), 'alice has no $SYS line')
  t.notOk(can(who('alice'), 'read', '$SYS/broker/uptime', p))
  t.notOk(can(bob, 'subscribe', '$share/g/bob/#', p), 'no shared subscriptions')
})

t.test('anonymous lines are parsed but never apply to a logged-in user', async (t) => {
  const acl = parseMosquittoAcl(FIXTURE, 'fixture')
  t.same(acl.anonymous, [{ filter: 'public/#', access: 1 }])
  t.notOk(can(who('alice'), 'read', 'public/news'))
  t.notOk(can(who('nobody'), 'read', 'public/news'))
})

t.test('repeated user sections add to one list', async (t) => {
  const p = policyOf('user a\ntopic read x\nuser b\ntopic read y\nuser a\ntopic read z\n')
  t.ok(can(who('a'), 'read', 'x', p))
  t.ok(can(who('a'), 'read', 'z', p))
  t.notOk(can(who('a'), 'read', 'y', p))
})

t.test('a topic line without an access word is readwrite', async (t) => {
  const p = policyOf('user a\ntopic x/#\n')
  t.ok(can(who('a'), 'read', 'x/1', p))
  t.ok(can(who('a'), 'publish', 'x/1', p))
})

t.test('blank lines, spaces-only lines, CRLF and first-column comments are skipped', async (t) => {
  const acl = parseMosquittoAcl('# c\r\n\r\n   \r\nuser a\r\n  topic read x\r\n#topic read y\n', 'f')
  t.same(acl.users.get('a'), [{ filter: 'x', access: 1 }])
})

t.test('a bad line is refused with the file and line number', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['user a\ntpoic read x\n', /:2: unknown keyword "tpoic"$/],
    ['user a\n  # indented\n', /:2: unknown keyword "#" \(a comment must start in the first column\)/],
    ['topic\tread\tx\n', /:1: unknown keyword "topic\\tread\\tx" \(fields are separated by spaces, not tabs\)/],
    ['\n\ntopic foo bar\n', /:3: unknown access "foo"/],
    ['topic read a/b+\n', /:1: invalid topic: "\+" and "#" must fill a whole topic level/],
    ['topic read a/#/b\n', /:1: invalid topic: "#" must be the last topic level/],
    ['user\n', /:1: missing user name after "user"/],
    ['user   \n', /:1: missing user name/],
    ['pattern\n', /:1: missing topic after "pattern"/],
    ['topic read\n', /:1: missing topic after "topic read"/],
    [`topic read ${'a/'.repeat(201)}a\n`, /:1: invalid topic: topic deeper than 200 levels/],
    ['topic constructor x\n', /:1: unknown access "constructor"/]
  ]
  for (const [text, re] of cases) {
    const file = aclFile(text)
    t.throws(() => createMosquittoAclPolicy({ file, allowSys: false }), { code: 'BASTION_ERR_CONFIG', message: re }, JSON.stringify(text))
    t.throws(() => createMosquittoAclPolicy({ file, allowSys: false }), { message: new RegExp(`^acl file ${file}:\\d+: `) })
  }
})

t.test('a missing file is a config error naming the file', async (t) => {
  const file = join(dir, 'nope')
  t.throws(() => createMosquittoAclPolicy({ file, allowSys: false }), { code: 'BASTION_ERR_CONFIG', message: `acl file ${file}: cannot be read (ENOENT)` })
})

t.test('reload applies a new file, and a bad new file keeps the old rules', async (t) => {
  const file = aclFile('user a\ntopic read x\n')
  const p = createMosquittoAclPolicy({ file, allowSys: false })
  const a = who('a')
  t.ok(can(a, 'read', 'x', p))
  writeFileSync(file, 'user a\ntopic read y\n')
  await p.reload()
  t.notOk(can(a, 'read', 'x', p), 'the same identity sees the new rules')
  t.ok(can(a, 'read', 'y', p))
  writeFileSync(file, 'user a\ntopic read z\nbogus\n')
  await t.rejects(p.reload(), { code: 'BASTION_ERR_CONFIG', message: /:3: unknown keyword "bogus"/ })
  t.ok(can(a, 'read', 'y', p), 'old rules still in force')
  t.notOk(can(a, 'read', 'z', p))
  rmSync(file)
  await t.rejects(p.reload(), { code: 'BASTION_ERR_CONFIG', message: /cannot be read \(ENOENT\)/ })
  t.ok(can(a, 'read', 'y', p))
})

t.test('read decisions stay fast with many rules', async (t) => {
  const lines = ['user a']
  for (let i = 0; i < 500; i++) lines.push(`topic read exact/${i}`, `topic read wild/${i}/+/#`)
  lines.push('pattern read dev/%c/#')
  const p = policyOf(lines.join('\n'))
  const a = who('a', 'c1')
  const start = process.hrtime.bigint()
  let allowed = 0
  for (let i = 0; i < 20_000; i++) if (can(a, 'read', i % 2 === 0 ? `exact/${i % 500}` : 'dev/c1/x', p)) allowed++
  const ms = Number(process.hrtime.bigint() - start) / 1e6
  t.equal(allowed, 20_000)
  t.ok(ms < 2000, `20k decisions in ${ms.toFixed(0)} ms`)
})
