// The login queue against an authenticator whose answers the test releases by hand.
import t from 'tap'
import { availableParallelism } from 'node:os'
import { pino } from 'pino'
import type { Authenticator, LoginRequest, LoginResult } from '../../src/auth/authenticator.js'
import { createLockout } from '../../src/auth/lockout.js'
import { createLoginQueue } from '../../src/auth/login-queue.js'
import { BastionError } from '../../src/errors.js'

/** An authenticator that answers only when the test says so, and tracks how many run at once. */
function gated (answer: (req: LoginRequest) => LoginResult = () => ({ ok: true, user: 'u' })): Authenticator & { running: number; peak: number; started: string[]; finish: (n?: number) => void } {
  const held: Array<() => void> = []
  const g = {
    name: 'gated',
    running: 0,
    peak: 0,
    started: [] as string[],
    async login (req: LoginRequest) {
      g.running++
      g.peak = Math.max(g.peak, g.running)
      g.started.push(req.clientId)
      await new Promise<void>((resolve) => held.push(resolve))
      g.running--
      return answer(req)
    },
    finish (n = 1) {
      for (let i = 0; i < n; i++) held.shift()?.()
    }
  }
  return g
}

const req = (clientId: string, username = 'u|123456'): LoginRequest => ({ username, password: Buffer.from('p'), clientId, remoteAddress: '192.0.2.1' })
const tick = async (): Promise<void> => await new Promise((resolve) => setImmediate(resolve))
const isBusy = (err: unknown): boolean => err instanceof BastionError && err.code === 'BASTION_ERR_BUSY'

t.test('at most `concurrency` logins run at once; the rest wait and start in arrival order', async (t) => {
  const inner = gated()
  const q = createLoginQueue({ concurrency: 2, maxWaiting: 10, workers: 1 })
  const auth = q.wrap(inner)
  const all = ['a', 'b', 'c', 'd', 'e'].map(async (id) => await auth.login(req(id)))
  await tick()
  t.equal(inner.running, 2)
  t.equal(q.waiting, 3)
  for (let i = 0; i < 5; i++) {
    inner.finish()
    await tick()
  }
  t.same(await Promise.all(all), Array(5).fill({ ok: true, user: 'u' }))
  t.equal(inner.peak, 2)
  t.same(inner.started, ['a', 'b', 'c', 'd', 'e'])
  t.equal(q.active, 0)
})

t.test('one more than maxWaiting is refused at once as busy', async (t) => {
  const inner = gated()
  const q = createLoginQueue({ concurrency: 1, maxWaiting: 2, workers: 1 })
  const auth = q.wrap(inner)
  const accepted = ['a', 'b', 'c'].map(async (id) => await auth.login(req(id)))
  await tick()
  const err = await auth.login(req('d')).catch((e: unknown) => e)
  t.ok(isBusy(err), 'BASTION_ERR_BUSY')
  t.match((err as Error).message, /1 logins in progress and 2 waiting \(auth\.loginQueue\)/)
  t.same(inner.started, ['a'], 'the refused login never reached the authenticator')
  inner.finish(3)
  for (let i = 0; i < 3; i++) { await tick(); inner.finish() }
  t.equal((await Promise.all(accepted)).length, 3)
})

t.test('maxWaiting 0: a login that finds every slot taken is refused', async (t) => {
  const inner = gated()
  const auth = createLoginQueue({ concurrency: 1, maxWaiting: 0, workers: 1 }).wrap(inner)
  const first = auth.login(req('a'))
  await tick()
  await t.rejects(auth.login(req('b')), { code: 'BASTION_ERR_BUSY' })
  inner.finish()
  await first
  const again = auth.login(req('c'))
  await tick()
  inner.finish()
  t.match(await again, { ok: true }, 'the slot is free again')
})

t.test('a login that throws gives its slot back', async (t) => {
  const q = createLoginQueue({ concurrency: 1, maxWaiting: 0, workers: 1 })
  let fail = true
  const auth = q.wrap({ name: 'x', login: async () => { if (fail) throw new Error('store down'); return { ok: true, user: 'u' } } })
  await t.rejects(auth.login(req('a')), /store down/)
  fail = false
  t.match(await auth.login(req('b')), { ok: true })
  t.equal(q.active, 0)
})

t.test('concurrency 0 is two per password worker', async (t) => {
  t.equal(createLoginQueue({ concurrency: 0, maxWaiting: 1, workers: 3 }).concurrency, 6)
  t.equal(createLoginQueue({ concurrency: 0, maxWaiting: 1, workers: 0 }).concurrency, 2 * Math.min(4, availableParallelism()))
  t.equal(createLoginQueue({ concurrency: 5, maxWaiting: 1, workers: 3 }).concurrency, 5)
})

t.test('closing refuses the waiting logins as busy and lets running ones finish', async (t) => {
  const inner = gated()
  const closed: string[] = []
  const auth = createLoginQueue({ concurrency: 1, maxWaiting: 5, workers: 1 }).wrap({ ...inner, login: inner.login, close: async () => { closed.push('inner') } })
  const running = auth.login(req('a'))
  const waiting = auth.login(req('b'))
  await tick()
  await auth.close?.()
  await t.rejects(waiting, { code: 'BASTION_ERR_BUSY' })
  await t.rejects(auth.login(req('c')), { code: 'BASTION_ERR_BUSY' })
  inner.finish()
  t.match(await running, { ok: true })
  t.same(closed, ['inner'], 'close reaches the inner authenticator')
})

t.test('behind the lockout, concurrent guesses overshoot the threshold by less than the concurrency', async (t) => {
  const lockout = createLockout({ window: 60, maxFailuresPerUser: 3, maxFailuresPerIp: 0, duration: 60, maxDuration: 60, splitCode: true, log: pino({ level: 'silent' }) })
  t.teardown(() => lockout.close())
  const inner = gated(() => ({ ok: false, reason: 'bad_password', user: 'alice' }))
  const auth = lockout.wrap(createLoginQueue({ concurrency: 2, maxWaiting: 100, workers: 1 }).wrap(lockout.recheck(inner)))
  const guesses = Array.from({ length: 20 }, async (_, i) => await auth.login(req(`g${i}`, 'alice|123456')))
  await tick()
  for (let i = 0; i < 20 && inner.running > 0; i++) {
    inner.finish()
    await tick()
  }
  const results = await Promise.all(guesses)
  // Without the re-check every queued guess, having passed the check on arrival, would run (20).
  t.ok(inner.started.length <= 3 + 2 - 1, `${inner.started.length} guesses checked: the threshold plus at most concurrency - 1`)
  t.equal(results.filter((r) => !r.ok && r.reason === 'locked_out').length, 20 - inner.started.length)
})

/** A two-phase authenticator: `screen` settles names starting with "bad" at once. */
function staged (inner: ReturnType<typeof gated>, deadline?: () => number): Authenticator {
  return {
    name: 'staged',
    login: inner.login,
    async screen (r) {
      if (r.clientId.startsWith('bad')) return { result: { ok: false, reason: 'bad_otp' } }
      return { verify: async () => await inner.login(r), ...(deadline === undefined ? {} : { deadline: deadline() }) }
    }
  }
}

t.test('what the cheap phase settles never waits for, nor takes, a password check slot', async (t) => {
  const inner = gated()
  const auth = createLoginQueue({ concurrency: 1, maxWaiting: 0, workers: 1 }).wrap(staged(inner))
  const running = auth.login(req('good-1'))
  await tick()
  // Every slot is taken and nothing may wait, yet wrong codes are answered at once.
  for (let i = 0; i < 50; i++) t.match(await auth.login(req(`bad-${i}`)), { ok: false, reason: 'bad_otp' })
  await t.rejects(auth.login(req('good-2')), { code: 'BASTION_ERR_BUSY' }, 'a password check still needs a slot')
  t.same(inner.started, ['good-1'], 'only the valid login reached the slow part')
  inner.finish()
  t.match(await running, { ok: true })
})

t.test('a login is not kept waiting past its code\'s deadline: it is told busy in time to retry', async (t) => {
  const inner = gated()
  const auth = createLoginQueue({ concurrency: 1, maxWaiting: 10, workers: 1 }).wrap(staged(inner, () => Date.now() + 1300))
  const running = auth.login(req('good-1'))
  await tick()
  const started = Date.now()
  await t.rejects(auth.login(req('good-2')), { code: 'BASTION_ERR_BUSY', message: /expire/ })
  const waited = Date.now() - started
  t.ok(waited < 1300, `refused after ${waited} ms, before the code expired`)
  const late = createLoginQueue({ concurrency: 1, maxWaiting: 10, workers: 1 }).wrap(staged(inner, () => Date.now() + 500))
  const first = late.login(req('good-3'))
  await tick()
  await t.rejects(late.login(req('good-4')), { code: 'BASTION_ERR_BUSY' }, 'a code about to expire is refused without waiting')
  inner.finish(2)
  t.match(await running, { ok: true })
  t.match(await first, { ok: true })
})

t.test('known devices wait in a line of their own and are served first when a slot frees', async (t) => {
  const inner = gated()
  const known = new Set(['dev-1', 'dev-2'])
  const auth = createLoginQueue({ concurrency: 1, maxWaiting: 3, workers: 1, priority: (r) => known.has(r.clientId) }).wrap(inner)
  const running = auth.login(req('stranger-0'))
  await tick()
  const strangers = [1, 2, 3].map(async (i) => await auth.login(req(`stranger-${i}`)))
  // The strangers' line is full; the known devices still get in line, and go first.
  await t.rejects(auth.login(req('stranger-4')), { code: 'BASTION_ERR_BUSY' })
  const devices = [auth.login(req('dev-1')), auth.login(req('dev-2'))]
  await tick()
  for (let i = 0; i < 6; i++) {
    inner.finish()
    await tick()
  }
  await Promise.all([running, ...strangers, ...devices])
  t.same(inner.started, ['stranger-0', 'dev-1', 'dev-2', 'stranger-1', 'stranger-2', 'stranger-3'])
})
