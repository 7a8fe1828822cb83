// listeners[].proxyProtocol: validated once, each error naming the key and the bad entry.
import t from 'tap'
import { parseConfig } from '../../src/config/schema.js'

const tls = (proxyProtocol: unknown): Record<string, unknown> => ({ listeners: [{ type: 'tls', port: 8883 }, { type: 'tls', port: 8884, proxyProtocol }] })

t.test('trusted proxies are addresses or CIDRs, kept normalised; without the key nothing changes', async (t) => {
  const c = parseConfig({
    listeners: [
      { type: 'tls', proxyProtocol: { trusted: ['127.0.0.1', '10.0.0.0/8', '::1', '2001:DB8:0:0::/32', ' 192.0.2.7/32 '] } },
      { type: 'tcp', port: 1883, proxyProtocol: { trusted: ['127.0.0.1'] } },
      { type: 'tls', port: 8884 }
    ]
  }, '/srv')
  const [tls, tcp, plain] = c.listeners as ReadonlyArray<{ proxyProtocol?: { trusted: readonly string[] } }>
  t.same(tls?.proxyProtocol, { trusted: ['127.0.0.1/32', '10.0.0.0/8', '::1/128', '2001:db8::/32', '192.0.2.7/32'] })
  t.same(tcp?.proxyProtocol, { trusted: ['127.0.0.1/32'] })
  t.notOk('proxyProtocol' in (plain as object), 'a listener without the key has none')
  t.ok(Object.isFrozen(tls?.proxyProtocol?.trusted))
})

t.test('a bad proxyProtocol stops the broker with one line naming the key and the entry', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [null, /listeners\[1\]\.proxyProtocol: must be a mapping with trusted/],
    [true, /listeners\[1\]\.proxyProtocol: must be a mapping/],
    [{}, /listeners\[1\]\.proxyProtocol\.trusted: must be a non-empty list/],
    [{ trusted: [] }, /listeners\[1\]\.proxyProtocol\.trusted: must be a non-empty list/],
    [{ trusted: '127.0.0.1' }, /listeners\[1\]\.proxyProtocol\.trusted: must be a non-empty list/],
    [{ trusted: ['127.0.0.1'], versions: [2] }, /listeners\[1\]\.proxyProtocol\.versions: unknown key \(allowed: trusted\)/],
    [{ trusted: ['127.0.0.1', 'proxy.example.com'] }, /listeners\[1\]\.proxyProtocol\.trusted\[1\]: "proxy\.example\.com" is not an IP address or CIDR/],
    [{ trusted: [7] }, /trusted\[0\]: must be a proxy address or CIDR/],
    [{ trusted: ['10.0.0.0/33'] }, /trusted\[0\]: "10\.0\.0\.0\/33": an IPv4 prefix is at most \/32/],
    [{ trusted: ['::1/129'] }, /trusted\[0\]: "::1\/129": an IPv6 prefix is at most \/128/],
    [{ trusted: ['10.0.0.0/-1'] }, /trusted\[0\]: "10\.0\.0\.0\/-1" is not an IP address or CIDR/],
    [{ trusted: ['fe80::1%eth0'] }, /trusted\[0\]: "fe80::1%eth0" is not an IP address or CIDR \(zone ids/],
    [{ trusted: ['127.0.0.1', '0.0.0.0/0'] }, /trusted\[1\]: "0\.0\.0\.0\/0" trusts every address, and anyone could then claim to be anyone/],
    [{ trusted: ['::/0'] }, /trusted\[0\]: "::\/0" trusts every address/],
    [{ trusted: ['0.0.0.0'] }, /trusted\[0\]: "0\.0\.0\.0" is the unspecified address/],
    [{ trusted: ['::'] }, /trusted\[0\]: "::" is the unspecified address/],
    [{ trusted: ['__proto__'] }, /trusted\[0\]: "__proto__" is not an IP address or CIDR/],
    [{ trusted: Array(1025).fill('10.0.0.1') }, /trusted: lists 1025 entries; at most 1024/]
  ]
  for (const [value, re] of bad) t.throws(() => parseConfig(tls(value), '/srv'), { code: 'BASTION_ERR_CONFIG', message: re }, JSON.stringify(value).slice(0, 80))
  t.throws(() => parseConfig({ listeners: [{ type: 'tcp', proxyProtocol: { trusted: ['0.0.0.0/0'] } }] }, '/srv'), /listeners\[0\]\.proxyProtocol\.trusted\[0\]: "0\.0\.0\.0\/0" trusts every address/, 'the tcp listener too')
})
