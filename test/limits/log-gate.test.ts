import t from 'tap'
import { createLogGate } from '../../src/log-gate.js'

t.test('one line per key and window; the next window\'s first line counts those left out', async (t) => {
  const clock = { t: 0 }
  const gate = createLogGate({ now: () => clock.t })
  t.same(gate.pass('a'), { suppressed: 0 })
  for (let i = 0; i < 5; i++) t.equal(gate.pass('a'), undefined)
  t.same(gate.pass('b'), { suppressed: 0 }, 'another key has its own line')
  clock.t = 59_999
  t.equal(gate.pass('a'), undefined, 'still inside the minute')
  clock.t = 60_000
  t.same(gate.pass('a'), { suppressed: 6 })
  t.equal(gate.pass('a'), undefined)
  clock.t = 200_000
  t.same(gate.pass('a'), { suppressed: 1 })
  t.same(gate.pass('b'), { suppressed: 0 })
})

t.test('burst: the first lines of a window pass as they are, then the key is held back', async (t) => {
  const clock = { t: 0 }
  const gate = createLogGate({ now: () => clock.t, burst: 3 })
  for (let i = 0; i < 3; i++) t.same(gate.pass('a'), { suppressed: 0 }, `line ${i + 1}`)
  for (let i = 0; i < 10; i++) t.equal(gate.pass('a'), undefined)
  clock.t = 60_000
  t.same(gate.pass('a'), { suppressed: 10 }, 'the first of the next window carries the count')
  t.same(gate.pass('a'), { suppressed: 0 })
  t.same(gate.pass('a'), { suppressed: 0 })
  t.equal(gate.pass('a'), undefined)
})

t.test('a group holds at most maxKeysPerGroup keys; its further keys share one line, other groups keep theirs', async (t) => {
  const clock = { t: 0 }
  const gate = createLogGate({ now: () => clock.t, maxKeysPerGroup: 3 })
  let passed = 0
  for (let i = 0; i < 1000; i++) if (gate.pass(`k${i}`, 'attacker') !== undefined) passed++
  t.equal(passed, 4, 'three keys, then one shared by the rest')
  t.same(gate.pass('mine', 'legit'), { suppressed: 0 }, 'another group is not crowded out')
  t.equal(gate.pass('k0', 'attacker'), undefined, 'a remembered key stays gated')
  clock.t = 60_000
  t.same(gate.pass('k500', 'attacker'), { suppressed: 0 }, 'expired keys free their places')
  t.same(gate.pass('k999', 'attacker'), { suppressed: 0 })
})

t.test('past maxKeys every new key shares one line; expired keys are forgotten first, without scanning live ones', async (t) => {
  const clock = { t: 0 }
  const gate = createLogGate({ now: () => clock.t, maxKeys: 100 })
  for (let i = 0; i < 100; i++) t.ok(gate.pass(`old${i}`))
  clock.t = 30_000
  let passed = 0
  for (let i = 0; i < 500; i++) if (gate.pass(`new${i}`) !== undefined) passed++
  t.equal(passed, 1, 'the gate is full: one shared line')
  t.equal(gate.pass('old5'), undefined, 'keys already remembered keep their own window')
  clock.t = 60_000
  t.same(gate.pass('fresh'), { suppressed: 0 }, 'the first minute\'s keys expired: room again')
  // A key whose window restarts moves behind the others, so expiry stays in window order.
  t.same(gate.pass('old7'), { suppressed: 0 })
  clock.t = 90_000
  t.same(gate.pass('another'), { suppressed: 0 })
})
