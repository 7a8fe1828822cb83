// limits.maxKeepAlive: 0 means no cap (issue 11), kept apart from hardening.test.ts.
import t from 'tap'
import { parseConfig } from '../../src/config/schema.js'
import { aedesLimitOptions } from '../../src/limits/guards.js'

t.test('limits.maxKeepAlive 0 is accepted and means no keepalive cap', async (t) => {
  const c = parseConfig({ limits: { maxKeepAlive: 0 } }, '/srv')
  t.equal(c.limits.maxKeepAlive, 0)
  // aedes reads keepaliveLimit 0 as "no limit": nothing is imposed or refused.
  t.equal(aedesLimitOptions(c.limits).keepaliveLimit, 0)
})

t.test('the default keepalive cap stays 300 and values out of range are still refused', async (t) => {
  t.equal(parseConfig({}, '/srv').limits.maxKeepAlive, 300)
  t.equal(parseConfig({ limits: { maxKeepAlive: 65535 } }, '/srv').limits.maxKeepAlive, 65535)
  for (const bad of [-1, 65536, 1.5]) {
    t.throws(() => parseConfig({ limits: { maxKeepAlive: bad } }, '/srv'), { code: 'BASTION_ERR_CONFIG', message: /config limits\.maxKeepAlive: must be an integer/ }, String(bad))
  }
})
