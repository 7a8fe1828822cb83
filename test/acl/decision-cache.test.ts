import t from 'tap'
import { cacheDecisions, CACHED_TOPICS_PER_CLIENT } from '../../src/acl/decision-cache.js'
import type { AclPolicy } from '../../src/acl/policy.js'
import { ALLOW, deny, type Action, type Decision, type Identity } from '../../src/types.js'

const alice: Identity = { user: 'alice', clientId: 'a1', remoteAddress: '127.0.0.1', hasWill: false }
const alice2: Identity = { user: 'alice', clientId: 'a2', remoteAddress: '127.0.0.1', hasWill: false }

/** A policy that counts its calls; `open/` topics allowed until `closed`. */
function counting (opts: { async?: boolean } = {}) {
  const calls: Array<[string, Action, string]> = []
  let closed = false
  let reloads = 0
  const policy: AclPolicy = {
    name: 'counting',
    decide (identity, action, topic): Decision | Promise<Decision> {
      calls.push([identity.clientId, action, topic])
      const d = !closed && topic.startsWith('open/') ? ALLOW : deny('no')
      return opts.async === true ? Promise.resolve(d) : d
    },
    async reload () { reloads++; if (reloads === 2) throw new Error('bad file') }
  }
  return { policy, calls, close: () => { closed = true } }
}

t.test('a publish or read answer is asked once per connection and topic', async (t) => {
  const c = counting()
  const p = cacheDecisions(c.policy)
  for (let i = 0; i < 5; i++) {
    t.same(p.decide(alice, 'publish', 'open/x'), ALLOW)
    t.match(p.decide(alice, 'read', 'secret/y'), { allow: false })
  }
  t.same(c.calls, [['a1', 'publish', 'open/x'], ['a1', 'read', 'secret/y']])
  p.decide(alice, 'read', 'open/x')
  p.decide(alice2, 'publish', 'open/x')
  t.same(c.calls.slice(2), [['a1', 'read', 'open/x'], ['a2', 'publish', 'open/x']], 'actions and connections do not share answers')
})

t.test('subscribe checks and asynchronous answers are never remembered', async (t) => {
  const c = counting({ async: true })
  const p = cacheDecisions(c.policy)
  for (let i = 0; i < 3; i++) t.same(await p.decide(alice, 'publish', 'open/x'), ALLOW)
  const s = counting()
  const q = cacheDecisions(s.policy)
  for (let i = 0; i < 3; i++) q.decide(alice, 'subscribe', 'open/#')
  t.equal(c.calls.length, 3, 'a remote backend decides every time')
  t.equal(s.calls.length, 3, 'subscriptions are checked every time')
})

t.test('reload forgets every answer, even a failed one', async (t) => {
  const c = counting()
  const p = cacheDecisions(c.policy)
  t.same(p.decide(alice, 'publish', 'open/x'), ALLOW)
  c.close()
  t.same(p.decide(alice, 'publish', 'open/x'), ALLOW, 'the remembered answer until the reload')
  await p.reload?.()
  t.match(p.decide(alice, 'publish', 'open/x'), { allow: false }, 'the new rules after it')
  await t.rejects(p.reload?.() ?? Promise.resolve(), /bad file/)
  const before = c.calls.length
  p.decide(alice, 'publish', 'open/x')
  t.equal(c.calls.length, before + 1, 'asked again after a failed reload too')
})

t.test('a client inventing topics is bounded: past the limit nothing more is remembered', async (t) => {
  const c = counting()
  const p = cacheDecisions(c.policy)
  for (let i = 0; i < CACHED_TOPICS_PER_CLIENT + 10; i++) p.decide(alice, 'publish', `open/${i}`)
  const asked = c.calls.length
  p.decide(alice, 'publish', 'open/0')
  t.equal(c.calls.length, asked, 'the first topics stay remembered')
  p.decide(alice, 'publish', `open/${CACHED_TOPICS_PER_CLIENT + 5}`)
  t.equal(c.calls.length, asked + 1, 'topics past the bound are asked each time')
  const fresh = cacheDecisions(counting().policy)
  for (let i = 0; i < 2; i++) t.equal(fresh.decide(alice, 'publish', '__proto__').allow, false, 'a prototype name is a topic like any other')
})
