// The forward (delivery) check in isolation: aedes asks it for every message it delivers.
import t from 'tap'
import { pino } from 'pino'
import { createHooks } from '../../src/auth/hooks.js'
import { createStoreAuthenticator } from '../../src/auth/login.js'
import { createMetricsPolicy } from '../../src/acl/metrics.js'
import { currentCode, newSecret } from '../../src/crypto/totp.js'

t.test('a message is forwarded only to clients whose policy lets them read its topic', async (t) => {
  const lines: string[] = []
  const log = pino({ level: 'info' }, { write: (s: string) => { lines.push(s) } })
  const secret = newSecret()
  const hooks = createHooks({
    authenticator: createStoreAuthenticator({
      store: { find: async () => ({ username: 'alice', passwordHash: 'h', totpSecret: secret, enabled: true, createdAt: '' }), claimStep: async () => true } as any,
      passwords: { verify: async () => true } as any,
      totp: { window: 1, replayProtection: false, required: true }
    }),
    clientIdPrefixes: [],
    certificateIdentity: () => 'none',
    policy: createMetricsPolicy({ prefix: 'metrics', leaves: ['Estado'] }),
    log
  })
  const forward = hooks.options.authorizeForward as (c: any, p: any) => unknown
  const stranger = { id: 'c1', conn: { remoteAddress: '127.0.0.1' } }
  t.equal(forward(stranger, { topic: 'metrics/alice/Estado' }), null, 'a client that never logged in gets nothing')

  // Log a client in the way aedes does: preConnect, then authenticate.
  const client = { id: 'c2', conn: { remoteAddress: '127.0.0.1' }, version: 5 }
  await new Promise<void>((resolve) => (hooks.options.preConnect as any)(client, { protocolVersion: 5, clean: true }, () => resolve()))
  const ok = await new Promise<boolean>((resolve) => (hooks.options.authenticate as any)(client, `alice|${currentCode(secret)}`, Buffer.from('pw'), (_e: unknown, s: boolean) => resolve(s)))
  t.equal(ok, true)
  const own = { topic: 'metrics/alice/Estado' }
  t.equal(forward(client, own), own, 'own branch delivered')
  t.equal(forward(client, { topic: 'metrics/bob/Estado' }), null, 'another branch is not')
  t.equal(forward(client, { topic: '$SYS/broker/x' }), null, '$SYS is not')
  const denials = (): string[] => lines.filter((l) => /"event":"acl.denied".*"action":"read".*"topic":"metrics\/bob\/Estado"/.test(l))
  t.equal(denials().length, 1, 'the denial is logged')
  t.equal(forward(client, { topic: 'metrics/bob/Estado' }), null, 'and refused again')
  t.equal(denials().length, 1, 'a repeat of the same topic is not logged again at info level and above')
})
