// The session registry alone: who holds a client id, and the re-check of live sessions.
import t from 'tap'
import { EventEmitter } from 'node:events'
import { pino } from 'pino'
import { bindingAllows, createSessionRegistry } from '../../src/auth/sessions.js'
import { credentialFingerprint } from '../../src/auth/login.js'
import type { UserRecord, UserStore } from '../../src/stores/store.js'

interface FakeClient { id: string; conn: EventEmitter; closed: boolean; sessionExpiryInterval: number; reason?: number; disconnect: (o: { reasonCode: number }, cb: () => void) => void }

function client (id: string, expiry = 0): FakeClient {
  const c: FakeClient = {
    id, conn: new EventEmitter(), closed: false, sessionExpiryInterval: expiry,
    disconnect (o, cb) { c.reason = o.reasonCode; c.closed = true; c.conn.emit('close'); cb() }
  }
  return c
}

function record (username: string, patch: Partial<UserRecord> = {}): UserRecord {
  return { username, passwordHash: `hash-${username}`, totpSecret: 'JBSWY3DPEHPK3PXP', enabled: true, createdAt: '', ...patch }
}

function logs (): { log: ReturnType<typeof pino>; lines: Array<Record<string, any>> } {
  const lines: Array<Record<string, any>> = []
  return { lines, log: pino({ level: 'debug' }, { write: (s: string) => { lines.push(JSON.parse(s)) } }) }
}

/** A store whose records (and faults) the test changes between re-checks. */
function fakeStore (users: Map<string, UserRecord>): UserStore & { failing: boolean; finds: number } {
  const s = {
    failing: false,
    finds: 0,
    async find (name: string) {
      s.finds++
      if (s.failing) throw new Error('store down')
      return users.get(name)
    }
  }
  return s as unknown as UserStore & { failing: boolean; finds: number }
}

t.test('clientIdBinding: exact wants the user, prefix wants it at the start, none takes any id', async (t) => {
  t.equal(bindingAllows('exact', 'iotclient01', 'iotclient01'), true)
  t.equal(bindingAllows('exact', 'iotclient01-sensor', 'iotclient01'), false)
  t.equal(bindingAllows('prefix', 'iotclient01-sensor', 'iotclient01'), true)
  t.equal(bindingAllows('prefix', 'iotclient01', 'iotclient01'), true)
  t.equal(bindingAllows('prefix', 'sensor-iotclient01', 'iotclient01'), false)
  t.equal(bindingAllows('prefix', 'sensor-10-kitchen', 'sensor-1'), false, 'a separator must follow the user: sensor-1 is not sensor-10')
  t.equal(bindingAllows('prefix', 'sensor-1:kitchen', 'sensor-1'), true)
  t.equal(bindingAllows('prefix', 'sensor-1x', 'sensor-1'), false)
  t.equal(bindingAllows('none', 'mosqpub|1234-host', 'iotclient01'), true)
})

t.test('a client id held by another user is refused; the same user takes it over; a closed connection frees it', async (t) => {
  const { log } = logs()
  const r = createSessionRegistry({ log })
  const a = client('shared')
  t.equal(r.admit(a as any, { user: 'alice', remote: '127.0.0.1' }), undefined)
  t.equal(r.admit(client('shared') as any, { user: 'bob', remote: '127.0.0.1' }), 'clientid_taken')
  const a2 = client('shared')
  t.equal(r.admit(a2 as any, { user: 'alice', remote: '127.0.0.1' }), undefined, 'the same user takes over')
  a.closed = true
  a.conn.emit('close')
  t.equal(r.admit(client('shared') as any, { user: 'bob', remote: '127.0.0.1' }), 'clientid_taken', 'the old connection closing does not free what the new one holds')
  a2.closed = true
  a2.conn.emit('close')
  t.equal(r.admit(client('shared') as any, { user: 'bob', remote: '127.0.0.1' }), undefined, 'free once its holder is gone')
})

t.test('a session that outlives its connection (MQTT 5 Session Expiry) stays with its user until it expires', async (t) => {
  const { log } = logs()
  const r = createSessionRegistry({ log })
  const a = client('keep', 60)
  r.admit(a as any, { user: 'alice', remote: '127.0.0.1' })
  a.closed = true
  t.equal(r.admit(client('keep') as any, { user: 'bob', remote: '127.0.0.1' }), 'clientid_taken', 'closed, its close not yet seen')
  a.conn.emit('close')
  t.equal(r.admit(client('keep') as any, { user: 'bob', remote: '127.0.0.1' }), 'clientid_taken', 'while the session may be resumed')
  t.equal(r.admit(client('keep') as any, { user: 'alice', remote: '127.0.0.1' }), undefined, 'its user resumes it')
})

t.test('a binding violation is refused before the holder is looked at', async (t) => {
  const { log } = logs()
  const r = createSessionRegistry({ log, clientIdBinding: 'prefix' })
  t.equal(r.admit(client('bob-1') as any, { user: 'alice', remote: '127.0.0.1' }), 'clientid_binding')
  t.equal(r.admit(client('alice-1') as any, { user: 'alice', remote: '127.0.0.1' }), undefined)
})

t.test('a re-check ends the sessions of disabled, removed and changed users with 0x98 and no others', async (t) => {
  const users = new Map(['alice', 'bob', 'carol', 'dave'].map((u) => [u, record(u)]))
  const { log, lines } = logs()
  const events: string[] = []
  const store = fakeStore(users)
  const r = createSessionRegistry({ log, store, onEvent: (e) => events.push(e.type) })
  const sessions = Object.fromEntries(['alice', 'bob', 'carol', 'dave'].map((u) => {
    const c = client(`${u}-1`)
    r.admit(c as any, { user: u, remote: '10.0.0.1', fingerprint: credentialFingerprint(users.get(u) as UserRecord) })
    return [u, c]
  }))
  const cert = client('cert-only')
  r.admit(cert as any, { user: 'erin', remote: '10.0.0.2' })
  users.set('alice', record('alice', { enabled: false }))
  users.delete('bob')
  users.set('carol', record('carol', { totpSecret: 'KRSXG5CTMVRXEZLU' }))
  users.set('dave', record('dave', { lastStep: 12345 }))
  await r.recheck()
  t.equal(sessions.alice?.reason, 0x98)
  t.equal(sessions.bob?.reason, 0x98)
  t.equal(sessions.carol?.reason, 0x98)
  t.equal(sessions.dave?.closed, false, 'a login moving the TOTP step changes no credential')
  t.equal(cert.closed, false, 'a certificate-only identity has no record to re-check')
  t.same(lines.filter((l) => l.event === 'session.revoked').map((l) => [l.user, l.clientId, l.remote, l.reason]), [
    ['alice', 'alice-1', '10.0.0.1', 'disabled'],
    ['bob', 'bob-1', '10.0.0.1', 'removed'],
    ['carol', 'carol-1', '10.0.0.1', 'credentials_changed']
  ])
  t.same(events, ['revoked', 'revoked', 'revoked'])
  t.equal(r.isRevoked(sessions.alice as any), true)
  t.notMatch(JSON.stringify(lines), /hash-|JBSWY|KRSXG/, 'no credential or fingerprint material is logged')
  t.notMatch(JSON.stringify(lines), new RegExp(credentialFingerprint(record('dave'))), 'nor the fingerprint')
  await r.recheck()
  t.equal(lines.filter((l) => l.event === 'session.revoked').length, 3, 'each session is revoked once')
})

t.test('a store that cannot answer during a re-check ends no session and is logged once', async (t) => {
  const users = new Map([['alice', record('alice')]])
  const { log, lines } = logs()
  const store = fakeStore(users)
  const r = createSessionRegistry({ log, store })
  const a = client('a1')
  r.admit(a as any, { user: 'alice', remote: '127.0.0.1', fingerprint: credentialFingerprint(record('alice')) })
  store.failing = true
  users.delete('alice')
  await r.recheck()
  await r.recheck()
  t.equal(a.closed, false)
  t.equal(lines.filter((l) => l.event === 'store.recheck_failed').length, 1)
  t.equal(lines.find((l) => l.event === 'store.recheck_failed')?.level, 40, 'at warn')
  store.failing = false
  await r.recheck()
  t.equal(a.reason, 0x98, 'once it answers again, the removal is acted on')
})

t.test('start runs the re-check every recheckInterval seconds and close stops it', async (t) => {
  const users = new Map([['alice', record('alice')]])
  const { log } = logs()
  const store = fakeStore(users)
  const r = createSessionRegistry({ log, store, recheckInterval: 1 })
  const a = client('a1')
  r.admit(a as any, { user: 'alice', remote: '127.0.0.1', fingerprint: credentialFingerprint(record('alice')) })
  r.start()
  users.set('alice', record('alice', { enabled: false }))
  for (let i = 0; i < 30 && !a.closed; i++) await new Promise((resolve) => setTimeout(resolve, 100))
  t.equal(a.reason, 0x98)
  r.close()
  const finds = store.finds
  await new Promise((resolve) => setTimeout(resolve, 1300))
  t.equal(store.finds, finds, 'no lookups after close')
})

t.test('without a store (HTTP backend) nothing is re-checked', async (t) => {
  const { log } = logs()
  const r = createSessionRegistry({ log, recheckInterval: 1 })
  const a = client('a1')
  r.admit(a as any, { user: 'alice', remote: '127.0.0.1', fingerprint: 'x' })
  r.start()
  await r.recheck()
  t.equal(a.closed, false)
  r.close()
})

t.test('of two logins admitted for one id, the one aedes registered is the one a re-check ends', async (t) => {
  const { log } = logs()
  const users = new Map([['alice', record('alice')]])
  const r = createSessionRegistry({ log, store: fakeStore(users) })
  const fingerprint = credentialFingerprint(record('alice'))
  const first = client('racing')
  const second = client('racing')
  t.equal(r.admit(first as any, { user: 'alice', remote: '127.0.0.1', fingerprint }), undefined)
  t.equal(r.admit(second as any, { user: 'alice', remote: '127.0.0.1', fingerprint }), undefined)
  // Registered in the other order: aedes keeps `first` and closes `second` (taken over).
  r.registered(second as any)
  r.registered(first as any)
  second.closed = true
  second.conn.emit('close')
  users.set('alice', record('alice', { enabled: false }))
  await r.recheck()
  t.equal(first.reason, 0x98, 'the connection aedes kept is revoked')
})
