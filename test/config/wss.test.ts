// The wss listener's keys: the TLS listener's, plus the upgrade's path and the allowed Origins.
import t from 'tap'
import { parseConfig } from '../../src/config/schema.js'

const TLS = { type: 'tls' }

t.test('a wss listener defaults to 0.0.0.0:8884, path /mqtt, no browser Origin, and the TLS defaults', async (t) => {
  const c = parseConfig({ listeners: [TLS, { type: 'wss' }] }, '/srv')
  t.match(c.listeners[1], {
    type: 'wss', host: '0.0.0.0', port: 8884, path: '/mqtt', origins: [],
    cert: '/srv/certs/server.crt', key: '/srv/certs/server.key', minVersion: 'TLSv1.2', requireClientCertificate: false, certificateIdentity: 'none'
  })
  t.ok(Object.isFrozen(c.listeners[1]) && Object.isFrozen((c.listeners[1] as { origins: unknown }).origins), 'frozen')
})

t.test('a wss listener takes the TLS listener\'s keys, a path and exact origins', async (t) => {
  const c = parseConfig({
    listeners: [TLS, {
      type: 'wss', host: '127.0.0.1', port: 443, path: '/ws/mqtt', cert: 'tls/a.crt', key: 'tls/a.key', ca: 'tls/ca.crt',
      minVersion: 'TLSv1.3', requireClientCertificate: true, crl: 'tls/crl.pem', origins: ['https://app.example.com', 'http://localhost:3000', 'https://[::1]:8443']
    }]
  }, '/srv')
  t.match(c.listeners[1], {
    type: 'wss', port: 443, path: '/ws/mqtt', cert: '/srv/tls/a.crt', ca: '/srv/tls/ca.crt', crl: '/srv/tls/crl.pem', minVersion: 'TLSv1.3',
    origins: ['https://app.example.com', 'http://localhost:3000', 'https://[::1]:8443']
  })
})

t.test('bad wss keys are refused with a message naming the key and the entry', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ type: 'wss', origin: ['https://a.example'] }, /config listeners\[1\]\.origin: unknown key/],
    [{ type: 'wss', origins: 'https://a.example' }, /config listeners\[1\]\.origins: must be a list/],
    [{ type: 'wss', origins: ['https://a.example', '*'] }, /config listeners\[1\]\.origins\[1\]: "\*" is not an origin/],
    [{ type: 'wss', origins: ['https://a.example/'] }, /origins\[0\]: "https:\/\/a\.example\/" is not an origin as browsers send it .*write https:\/\/a\.example$/],
    [{ type: 'wss', origins: ['https://a.example/app'] }, /origins\[0\]: .*write https:\/\/a\.example$/],
    [{ type: 'wss', origins: ['https://A.example'] }, /origins\[0\]: .*write https:\/\/a\.example$/],
    [{ type: 'wss', origins: ['https://a.example:443'] }, /origins\[0\]: .*write https:\/\/a\.example$/],
    [{ type: 'wss', origins: ['https://user@a.example'] }, /origins\[0\]/],
    [{ type: 'wss', origins: ['ftp://a.example'] }, /origins\[0\]: "ftp:\/\/a\.example" is not an origin: expected http\(s\)/],
    [{ type: 'wss', origins: ['null'] }, /origins\[0\]/],
    [{ type: 'wss', origins: [''] }, /origins\[0\]: must be an origin/],
    [{ type: 'wss', origins: [42] }, /origins\[0\]: must be an origin/],
    [{ type: 'wss', path: 'mqtt' }, /config listeners\[1\]\.path: "mqtt" is not a URL path/],
    [{ type: 'wss', path: '/mqtt?x=1' }, /listeners\[1\]\.path/],
    [{ type: 'wss', path: '/mq tt' }, /listeners\[1\]\.path/],
    [{ type: 'wss', path: '' }, /listeners\[1\]\.path: must be a non-empty string/],
    [{ type: 'wss', port: 70000 }, /listeners\[1\]\.port/],
    [{ type: 'wss', minVersion: 'TLSv1.1' }, /listeners\[1\]\.minVersion: must be one of/],
    [{ type: 'wss', requireClientCertificate: true }, /listeners\[1\]\.ca: is required/],
    [{ type: 'wss', ciphers: 'NOPE-CIPHER' }, /listeners\[1\]\.ciphers/],
    [{ type: 'wss', proxyProtocol: { trusted: ['127.0.0.1'] } }, /listeners\[1\]\.proxyProtocol: unknown key/],
    [{ type: 'tls', path: '/mqtt' }, /listeners\[1\]\.path: unknown key/],
    [{ type: 'tcp', origins: [] }, /listeners\[1\]\.origins: unknown key/],
    [{ type: 'ws' }, /listeners\[1\]\.type: must be tls, tcp or wss/]
  ]
  for (const [l, re] of bad) t.throws(() => parseConfig({ listeners: [TLS, l] }, '/srv'), { code: 'BASTION_ERR_CONFIG', message: re }, JSON.stringify(l))
})
