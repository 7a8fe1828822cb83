import t from 'tap'
import { join } from 'node:path'
import { parseConfig } from '../../src/config/schema.js'
import { loadConfig } from '../../src/config/load.js'
import { writeFileSync } from 'node:fs'
import { scratch } from '../helpers/scratch.js'

const scratchDir = scratch('bastion-cfg-')

t.test('defaults: TLS on 0.0.0.0:8883, TLS 1.2, SQLite store, metrics policy, ephemeral sessions', async (t) => {
  const c = parseConfig({}, '/srv')
  t.match(c.listeners[0], { type: 'tls', host: '0.0.0.0', port: 8883, cert: '/srv/certs/server.crt', key: '/srv/certs/server.key', minVersion: 'TLSv1.2', requireClientCertificate: false })
  t.same(c.auth.store, { type: 'sqlite', path: '/srv/data/users.db' })
  t.same(c.auth.totp, { window: 1, replayProtection: true, required: true })
  t.same(c.auth.clientIdPrefixes, [])
  t.match(c.listeners[0], { certificateIdentity: 'none' })
  t.same(c.acl.metrics.leaves, ['Temperatura', 'Humedad', 'Estado'])
  t.equal(c.sessions.maxExpiry, 0)
  t.equal(c.will.serverWill, true)
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.auth.totp), 'frozen')
})

t.test('a plain tcp listener binds loopback unless a host is given', async (t) => {
  const c = parseConfig({ listeners: [{ type: 'tls' }, { type: 'tcp' }] }, '/srv')
  t.match(c.listeners[1], { type: 'tcp', host: '127.0.0.1', port: 1883 })
})

t.test('a broker without a tls listener: wss alone, or tcp behind a TLS-terminating proxy', async (t) => {
  const wss = parseConfig({ listeners: [{ type: 'wss' }] }, '/srv')
  t.match(wss.listeners, [{ type: 'wss', port: 8884, cert: '/srv/certs/server.crt' }], 'wss alone is encrypted')
  const proxied = parseConfig({ listeners: [{ type: 'tcp', host: '10.0.0.11', proxyProtocol: { trusted: ['10.0.0.2'] } }] }, '/srv')
  t.match(proxied.listeners, [{ type: 'tcp', host: '10.0.0.11', proxyProtocol: { trusted: ['10.0.0.2'] } }], 'the proxy terminates TLS')
  const dir = scratchDir()
  const file = join(dir, 'bastion.yaml')
  writeFileSync(file, 'listeners:\n  - type: wss\n    port: 9443\n')
  t.throws(() => loadConfig({ env: { BASTION_CONFIG: file, BASTION_PORT: '1234' } }), /^env BASTION_PORT: the config has no tls listener to apply it to/, 'an override with nothing to apply to is refused, not ignored')
  t.throws(() => loadConfig({ env: { BASTION_CONFIG: file, BASTION_HOST: '127.0.0.1' } }), /^env BASTION_HOST: the config has no tls listener/)
  t.equal(loadConfig({ env: { BASTION_CONFIG: file } }).config.listeners[0]?.port, 9443)
})

t.test('bad keys and values are refused with a message naming the key', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ listner: [] }, /config listner: unknown key/],
    [{ auth: { totp: { windw: 2 } } }, /config auth\.totp\.windw: unknown key/],
    [{ auth: { totp: { window: -1 } } }, /auth\.totp\.window: must be an integer/],
    [{ listeners: [{ type: 'tls', port: 70000 }] }, /listeners\[0\]\.port/],
    [{ listeners: [{ type: 'tls', minVersion: 'TLSv1.1' }] }, /listeners\[0\]\.minVersion: must be one of TLSv1\.2, TLSv1\.3/],
    [{ listeners: [{ type: 'tls', requireClientCertificate: true }] }, /listeners\[0\]\.ca: is required/],
    [{ listeners: [{ type: 'tcp' }] }, /^config listeners: needs a tls or wss listener \(or a tcp listener with proxyProtocol/],
    [{ listeners: [{ type: 'tcp', host: '0.0.0.0' }, { type: 'tcp', port: 1884 }] }, /listeners: needs a tls or wss listener/],
    [{ listeners: [{ type: 'udp' }] }, /listeners\[0\]\.type/],
    [{ acl: { policy: 'open' } }, /acl\.policy: must be one of metrics, mosquitto-acl, http/],
    [{ acl: { policy: 'mosquitto-acl' } }, /acl\.file: is required with policy mosquitto-acl/],
    [{ acl: { file: 'acl' } }, /acl\.file: is only used with policy mosquitto-acl/],
    [{ acl: { allowSys: true } }, /acl\.allowSys: is only used with policy mosquitto-acl/],
    [{ acl: { policy: 'http' } }, /acl\.policy: http needs auth\.store\.type http/],
    [{ acl: { deniedPublishV311: 'drop' } }, /acl\.deniedPublishV311: must be one of acknowledge, disconnect/],
    [{ auth: { totp: { required: false } } }, /auth\.totp\.required: the sqlite store always requires a TOTP code/],
    [{ auth: { store: { type: 'mosquitto-passwd', path: 'p' }, totp: { required: true } } }, /auth\.totp\.required: needs auth\.store\.totpFile/],
    [{ auth: { store: { type: 'mosquitto-passwd' } } }, /auth\.store\.path: must be a non-empty string/],
    [{ auth: { store: { type: 'ldap' } } }, /auth\.store\.type: must be sqlite, file, mysql, mosquitto-passwd or http/],
    [{ auth: { store: { type: 'http' } } }, /auth\.store\.url: must be a non-empty string/],
    [{ auth: { store: { type: 'http', url: 'ftp://x' } } }, /auth\.store\.url: must start with http/],
    [{ auth: { store: { type: 'http', url: 'http://u:p@x' } } }, /auth\.store\.url: must not carry credentials/],
    [{ auth: { store: { type: 'http', url: 'http://x', userPath: 'auth' } } }, /auth\.store\.userPath: must start with \//],
    [{ auth: { store: { type: 'http', url: 'http://x', paramsMode: 'xml' } } }, /auth\.store\.paramsMode: must be one of json, form/],
    [{ auth: { store: { type: 'http', url: 'http://x' }, totp: { required: true } } }, /auth\.totp\.required: does not apply to the http store/],
    [{ auth: { clientIdPrefixes: 'iot-' } }, /auth\.clientIdPrefixes: must be a list/],
    [{ auth: { clientIdPrefixes: [''] } }, /auth\.clientIdPrefixes\[0\]: must be a non-empty string/],
    [{ listeners: [{ type: 'tls', useIdentityAsUsername: true }] }, /listeners\[0\]\.useIdentityAsUsername: needs requireClientCertificate: true/],
    [{ listeners: [{ type: 'tls', ca: 'ca', requireClientCertificate: true, useIdentityAsUsername: true, bindCertificate: true }] }, /give at most one of .*useIdentityAsUsername, bindCertificate/],
    [{ listeners: [{ type: 'tls', crl: 'crl.pem' }] }, /listeners\[0\]\.crl: needs requireClientCertificate: true/],
    [{ acl: { metrics: { leaves: ['a/b'] } } }, /acl\.metrics\.leaves\[0\]/],
    [{ acl: { metrics: { prefix: '#' } } }, /acl\.metrics\.prefix/],
    [{ sessions: { maxExpiry: 'forever' } }, /sessions\.maxExpiry/],
    [{ will: { serverWill: 'yes' } }, /will\.serverWill: must be true or false/],
    [{ log: { level: 'loud' } }, /log\.level/],
    [[1, 2], /must be a mapping/]
  ]
  for (const [doc, re] of bad) t.throws(() => parseConfig(doc, '/srv'), { code: 'BASTION_ERR_CONFIG', message: re }, JSON.stringify(doc))
})

t.test('a config file is YAML, relative paths resolve against its folder, env overrides apply', async (t) => {
  const dir = scratchDir()
  const file = join(dir, 'bastion.yaml')
  writeFileSync(file, 'listeners:\n  - type: tls\n    port: 9999\n    cert: tls/s.crt\n    key: tls/s.key\nlog:\n  level: warn\n')
  const { config } = loadConfig({ file, env: {} })
  t.match(config.listeners[0], { port: 9999, cert: join(dir, 'tls/s.crt') })
  t.equal(config.log.level, 'warn')
  t.equal(config.devCertificates, false, 'no certificates are generated for an explicit config')
  const viaEnv = loadConfig({ env: { BASTION_CONFIG: file, BASTION_PORT: '1234', BASTION_LOG_LEVEL: 'debug', BASTION_USERS_FILE: '/x/u.json' } }).config
  t.equal(viaEnv.listeners[0]?.port, 1234)
  t.equal(viaEnv.log.level, 'debug')
  t.same(viaEnv.auth.store, { type: 'file', path: '/x/u.json' }, 'a .json file is the JSON store')
  t.same(loadConfig({ env: { BASTION_USERS_FILE: '/x/u.db' } }).config.auth.store, { type: 'sqlite', path: '/x/u.db' }, 'anything else is SQLite')
  t.throws(() => loadConfig({ env: { BASTION_CONFIG: file, BASTION_PORT: 'abc' } }), /BASTION_PORT/)
  t.throws(() => loadConfig({ env: { BASTION_CONFIG: file, BASTION_LOG_LEVEL: 'loud' } }), /^env BASTION_LOG_LEVEL: "loud" must be one of fatal, error/, 'a bad level names the variable, not log.level')
  t.throws(() => loadConfig({ file: join(dir, 'missing.yaml'), env: {} }), /cannot read config file .*missing\.yaml: ENOENT/)
  writeFileSync(file, 'listeners: [\n')
  t.throws(() => loadConfig({ file, env: {} }), /not valid YAML/)
  t.equal(loadConfig({ env: {}, cwd: dir }).config.devCertificates, true, 'defaults generate development certificates')
})

t.test('Mosquitto drop-in keys: password file store, acl file, client id prefixes, certificate identities', async (t) => {
  const c = parseConfig({
    listeners: [{ type: 'tls', ca: 'ca.crt', requireClientCertificate: true, useSubjectAsUsername: true, crl: 'crl.pem' }],
    auth: { store: { type: 'mosquitto-passwd', path: 'passwd', totpFile: 'totp' }, clientIdPrefixes: ['iot-'] },
    acl: { policy: 'mosquitto-acl', file: 'acl', allowSys: true }
  }, '/etc/m')
  t.match(c.listeners[0], { certificateIdentity: 'subject', crl: '/etc/m/crl.pem' })
  t.same(c.auth.store, { type: 'mosquitto-passwd', path: '/etc/m/passwd', totpFile: '/etc/m/totp' })
  t.equal(c.auth.totp.required, false, 'password-file users log in without a code by default')
  t.same(c.auth.clientIdPrefixes, ['iot-'])
  t.match(c.acl, { policy: 'mosquitto-acl', file: '/etc/m/acl', allowSys: true, deniedPublishV311: 'acknowledge' })
  t.equal(parseConfig({}, '/etc/m').acl.deniedPublishV311, 'disconnect', 'the metrics policy closes a 3.1.1 client on a denied publish')
  t.equal(parseConfig({ acl: { policy: 'mosquitto-acl', file: 'acl', deniedPublishV311: 'disconnect' } }, '/etc/m').acl.deniedPublishV311, 'disconnect')
  const withTotp = parseConfig({ auth: { store: { type: 'mosquitto-passwd', path: 'p', totpFile: 't' }, totp: { required: true } } }, '/etc/m')
  t.equal(withTotp.auth.totp.required, true)
  const http = parseConfig({ auth: { store: { type: 'http', url: 'http://127.0.0.1:5000/' } }, acl: { policy: 'http' } }, '/etc/m')
  t.same(http.auth.store, { type: 'http', url: 'http://127.0.0.1:5000', userPath: '/auth/user', aclPath: '/auth/acl', paramsMode: 'json', responseMode: 'json', timeout: 2000, cacheTtl: 0 })
})

t.test('the monitoring listener is off by default and binds loopback unless a host is given', async (t) => {
  t.same(parseConfig({}, '/srv').monitoring, { enabled: false, host: '127.0.0.1', port: 9464 })
  t.same(parseConfig({ monitoring: { enabled: true } }, '/srv').monitoring, { enabled: true, host: '127.0.0.1', port: 9464 })
  t.same(parseConfig({ monitoring: { enabled: true, host: '0.0.0.0', port: 0 } }, '/srv').monitoring, { enabled: true, host: '0.0.0.0', port: 0 })
  t.ok(Object.isFrozen(parseConfig({}, '/srv').monitoring), 'frozen')
})

t.test('bad monitoring keys and values are refused with a message naming the key', async (t) => {
  const bad: Array<[unknown, RegExp]> = [
    [{ monitoring: { enable: true } }, /config monitoring\.enable: unknown key \(allowed: enabled, host, port\)/],
    [{ monitoring: { enabled: 'yes' } }, /config monitoring\.enabled: must be true or false/],
    [{ monitoring: { port: 70000 } }, /config monitoring\.port: must be an integer from 0 to 65535/],
    [{ monitoring: { host: 'not a host!' } }, /config monitoring\.host: "not a host!" is not an IP address or host name/],
    [{ monitoring: true }, /config monitoring: must be a mapping/]
  ]
  for (const [doc, re] of bad) t.throws(() => parseConfig(doc, '/srv'), { code: 'BASTION_ERR_CONFIG', message: re }, JSON.stringify(doc))
})

t.test('the MySQL password: from the URL, or one of password, passwordFile, passwordEnv', async (t) => {
  const dir = scratchDir()
  writeFileSync(join(dir, 'db_pw'), 'from-file\n')
  const pw = (store: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): unknown =>
    (parseConfig({ auth: { store: { type: 'mysql', url: 'mysql://bastion:from-url@db/iot', ...store } } }, dir, { env }).auth.store as { password?: string }).password
  t.equal(pw({}), 'from-url')
  t.equal(pw({ password: 'from-key' }), 'from-key', 'a key wins over the URL')
  t.equal(pw({ passwordFile: 'db_pw' }), 'from-file', 'read now, its line break dropped')
  t.equal(pw({ passwordEnv: 'DB_PW' }, { DB_PW: 'from-env' }), 'from-env')
  t.throws(() => pw({ password: 'a', passwordEnv: 'DB_PW' }), /^config auth\.store: give one of password, passwordFile, passwordEnv \(got password, passwordEnv\)/)
  t.throws(() => pw({ passwordFile: 'missing' }), /^config auth\.store\.passwordFile: cannot read .*missing: ENOENT/)
  t.throws(() => pw({ passwordEnv: 'NOPE' }), /^config auth\.store\.passwordEnv: environment variable NOPE is not set/)
  t.throws(() => pw({ password: 1234 }), /^config auth\.store\.password: must be a non-empty string/, 'not silently ignored')
})
