// The auth hooks' refusal lines with a clock of our own: once per key and minute, the next one
// carrying `suppressed`; every refusal still reported to the metrics (onEvent).
import t from 'tap'
import { pino } from 'pino'
import { createHooks, LOGIN_FAILURES_LOGGED, type HookEvent } from '../../src/auth/hooks.js'
import { createMetricsPolicy } from '../../src/acl/metrics.js'
import type { Authenticator } from '../../src/auth/authenticator.js'
import type { LoginFailure } from '../../src/types.js'

interface Setup {
  lines: Array<Record<string, any>>
  seen: HookEvent[]
  clock: { t: number }
  hooks: ReturnType<typeof createHooks>
  /** A fake aedes client from `remote`. */
  client: (id: string, remote?: string) => any
  /** Runs preConnect + authenticate as aedes does; resolves whether the login was accepted. */
  login: (client: any, username: string) => Promise<boolean>
}

function setup (refusal?: LoginFailure): Setup {
  const lines: Array<Record<string, any>> = []
  const log = pino({ level: 'debug' }, { write: (s: string) => { lines.push(JSON.parse(s)) } })
  const seen: HookEvent[] = []
  const clock = { t: 1_000_000 }
  // Accepts `name|ok`; anything else is refused with `refusal`.
  const authenticator: Authenticator = {
    login: async ({ username }) => {
      const [user = '', code] = (username ?? '').split('|')
      return code === 'ok' ? { ok: true, user } : { ok: false, reason: refusal ?? 'bad_password', user }
    }
  } as Authenticator
  const hooks = createHooks({
    authenticator,
    clientIdPrefixes: [],
    certificateIdentity: () => 'none',
    policy: createMetricsPolicy({ prefix: 'metrics', leaves: ['Estado'] }),
    log,
    onEvent: (e) => seen.push(e),
    logGate: { now: () => clock.t }
  })
  const client = (id: string, remote = '127.0.0.1'): any => ({ id, conn: { remoteAddress: remote }, version: 5 })
  const login = async (c: any, username: string): Promise<boolean> => {
    await new Promise<void>((resolve) => (hooks.options.preConnect as any)(c, { protocolVersion: 5, clean: true }, () => resolve()))
    return await new Promise<boolean>((resolve) => (hooks.options.authenticate as any)(c, username, Buffer.from('pw'), (_e: unknown, ok: boolean) => resolve(ok)))
  }
  return { lines, seen, clock, hooks, client, login }
}

const publish = async (hooks: Setup['hooks'], c: any, topic: string): Promise<unknown> =>
  await new Promise((resolve) => (hooks.options.authorizePublish as any)(c, { cmd: 'publish', topic, payload: Buffer.from('x'), qos: 1 }, (err: unknown) => resolve(err)))
const subscribe = async (hooks: Setup['hooks'], c: any, topic: string): Promise<unknown> =>
  await new Promise((resolve) => (hooks.options.authorizeSubscribe as any)(c, { topic, qos: 1 }, (_e: unknown, sub: unknown) => resolve(sub)))

t.test('acl.denied: one line per client and action a minute; the next one counts what was left out', async (t) => {
  const { lines, seen, clock, hooks, client, login } = setup()
  const bob = client('bob-1')
  t.equal(await login(bob, 'bob|ok'), true)
  for (let i = 0; i < 50; i++) t.ok(await publish(hooks, bob, i % 2 === 0 ? 'metrics/alice/Estado' : '$SYS/x'), 'refused')
  for (let i = 0; i < 5; i++) t.equal(await subscribe(hooks, bob, 'metrics/alice/#'), null, 'refused')
  const denials = (): Array<Record<string, any>> => lines.filter((l) => l.event === 'acl.denied')
  t.match(denials(), [{ action: 'publish', topic: 'metrics/alice/Estado', user: 'bob', clientId: 'bob-1' }, { action: 'subscribe', topic: 'metrics/alice/#' }])
  t.notOk('suppressed' in (denials()[0] ?? {}))
  t.equal(seen.filter((e) => e.type === 'acl.denied').length, 55, 'every denial is an event')
  clock.t += 60_000
  await publish(hooks, bob, '$SYS/y')
  t.match(denials()[2], { action: 'publish', topic: '$SYS/y', suppressed: 49 })
  const forward = hooks.options.authorizeForward as (c: any, p: any) => unknown
  for (let i = 0; i < 20; i++) t.equal(forward(bob, { topic: `metrics/carol${i}/Estado` }), null)
  t.equal(denials().filter((l) => l.action === 'read').length, 1, 'deliveries too: one line, whatever the topics')
})

t.test('acl.denied: an account\'s client ids share a bounded number of lines; another account keeps its own', async (t) => {
  const { lines, hooks, client, login } = setup()
  for (let i = 0; i < 100; i++) {
    const c = client(`mallory-${i}`)
    await login(c, 'mallory|ok')
    await publish(hooks, c, 'metrics/alice/Estado')
  }
  const mallory = lines.filter((l) => l.event === 'acl.denied' && l.user === 'mallory').length
  t.ok(mallory > 1 && mallory <= 17, `${mallory} lines for 100 client ids`)
  const bob = client('bob-1')
  await login(bob, 'bob|ok')
  await publish(hooks, bob, 'metrics/alice/Estado')
  t.match(lines.filter((l) => l.event === 'acl.denied' && l.user === 'bob'), [{ clientId: 'bob-1' }])
})

t.test('login.failed: the first lines of each reason from an address pass, then one per address, reason and account a minute', async (t) => {
  const { lines, seen, clock, client, login } = setup()
  for (let i = 0; i < 100; i++) t.equal(await login(client(`c${i}`), 'alice|bad'), false)
  const failed = (): Array<Record<string, any>> => lines.filter((l) => l.event === 'login.failed')
  t.equal(failed().length, LOGIN_FAILURES_LOGGED + 1, 'the allowance, then one gated line')
  t.ok(failed().every((l) => l.reason === 'bad_password' && l.user === 'alice' && !('suppressed' in l)))
  t.equal(seen.filter((e) => e.type === 'login.failed').length, 100, 'every failure is an event')
  for (let i = 0; i < 3; i++) await login(client(`o${i}`, '10.0.0.9'), 'alice|bad')
  t.equal(failed().filter((l) => l.remote === '10.0.0.9').length, 3, 'another address has its own allowance')
  clock.t += 60_000
  await login(client('later'), 'alice|bad')
  t.equal(failed().length, LOGIN_FAILURES_LOGGED + 5, 'a new minute: a new allowance')
  for (let i = 0; i < LOGIN_FAILURES_LOGGED; i++) await login(client(`d${i}`), 'alice|bad')
  t.match(failed().at(-1), { clientId: 'd19', suppressed: 79 }, 'past it, the gated line counts what was left out')
})

t.test('login.failed: one address claiming many accounts gets a bounded number of lines', async (t) => {
  const { lines, client, login } = setup('unknown_user')
  for (let i = 0; i < 500; i++) await login(client(`c${i}`, '2001:db8::1'), `user${i}|bad`)
  // IPv6 counts per /64: another address of the same /64 shares the allowance.
  for (let i = 0; i < 50; i++) await login(client(`d${i}`, '2001:db8::2'), `other${i}|bad`)
  const n = lines.filter((l) => l.event === 'login.failed').length
  t.ok(n > LOGIN_FAILURES_LOGGED && n <= LOGIN_FAILURES_LOGGED + 17, `${n} lines for 550 failures`)
  const elsewhere = client('x', '2001:db8:0:1::1')
  await login(elsewhere, 'legit|bad')
  t.match(lines.at(-1), { event: 'login.failed', user: 'legit', remote: '2001:db8:0:1::1' }, 'another /64 is not crowded out')
})

t.test('login.failed locked_out: once a minute per address and account from the first one', async (t) => {
  const { lines, client, login } = setup('locked_out')
  for (let i = 0; i < 10; i++) await login(client(`c${i}`), 'alice|bad')
  t.match(lines.filter((l) => l.event === 'login.failed'), [{ reason: 'locked_out', user: 'alice' }])
})

t.test('the limits\' refusals go through the same login gate', async (t) => {
  const { lines, seen, hooks, client } = setup()
  for (let i = 0; i < 100; i++) hooks.loginFailed(client(`k${i}`), 'keepalive_rejected')
  t.equal(lines.filter((l) => l.event === 'login.failed' && l.reason === 'keepalive_rejected').length, LOGIN_FAILURES_LOGGED + 1)
  t.equal(seen.length, 100)
})
