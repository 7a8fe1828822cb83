// Which devices the login queue serves first: an account that logged in from an address.
import t from 'tap'
import type { Authenticator, LoginRequest } from '../../src/auth/authenticator.js'
import { createReputation } from '../../src/auth/reputation.js'

const req = (user: string, remote: string, password = 'right'): LoginRequest => ({ username: `${user}|123456`, password: Buffer.from(password), clientId: 'c', remoteAddress: remote })
const inner: Authenticator = {
  name: 'scripted',
  async login (r) {
    const user = (r.username ?? '').split('|')[0] as string
    return r.password?.toString() === 'right' ? { ok: true, user } : { ok: false, reason: 'bad_otp', user }
  }
}

t.test('a success makes the account known from that address only', async (t) => {
  const rep = createReputation({ splitCode: true })
  const auth = rep.wrap(inner)
  t.notOk(rep.known(req('alice', '192.0.2.1')))
  await auth.login(req('alice', '192.0.2.1'))
  t.ok(rep.known(req('ALICE', '192.0.2.1')), 'case does not matter; the code does not either')
  t.notOk(rep.known(req('alice', '192.0.2.2')), 'another address is a stranger')
  t.notOk(rep.known(req('bob', '192.0.2.1')), 'another account is a stranger')
})

t.test('a failure from the address forgets it; so does time', async (t) => {
  let now = 1_000_000
  const rep = createReputation({ splitCode: true, rememberMs: 60_000, now: () => now })
  const auth = rep.wrap(inner)
  await auth.login(req('alice', '192.0.2.1'))
  await auth.login(req('alice', '192.0.2.1', 'wrong'))
  t.notOk(rep.known(req('alice', '192.0.2.1')), 'failed since')
  await auth.login(req('alice', '192.0.2.1'))
  now += 60_001
  t.notOk(rep.known(req('alice', '192.0.2.1')), 'too long ago')
})

t.test('memory is bounded and hostile names are never keys', async (t) => {
  const rep = createReputation({ splitCode: true, maxEntries: 3 })
  const auth = rep.wrap(inner)
  for (let i = 0; i < 10; i++) await auth.login(req(`u${i}`, '192.0.2.1'))
  t.equal(rep.size, 3)
  t.ok(rep.known(req('u9', '192.0.2.1')))
  t.notOk(rep.known(req('u0', '192.0.2.1')), 'the oldest went first')
  await auth.login(req('x'.repeat(100_000), '192.0.2.1'))
  await auth.login(req('__proto__', '192.0.2.1'))
  t.equal(rep.size, 3)
  t.ok(rep.known(req('__proto__', '192.0.2.1')), 'an ordinary name in a Map')
})
