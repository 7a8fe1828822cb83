import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { initCertificates, issueClientCertificate } from '../../src/certs/issue.js'
import { configCommand } from '../../src/cli/config.js'
import { parseConfig, redactedConfig } from '../../src/config/schema.js'
import { scratch } from '../helpers/scratch.js'

const dir = scratch('bastion-cluster-cfg-')

function refusal (doc: unknown, env: NodeJS.ProcessEnv = {}): string {
  try {
    parseConfig(doc, '/srv', { env })
  } catch (err) {
    return (err as Error).message
  }
  throw new Error('accepted')
}

t.test('without cluster the broker is a single node', async (t) => {
  t.equal(parseConfig({}, '/srv').cluster, undefined)
})

t.test('cluster defaults: Redis on 127.0.0.1:6379 db 0, keys and channels under bastion:, node hostname-pid', async (t) => {
  const c = parseConfig({ cluster: { redis: {} } }, '/srv').cluster
  t.same(c, { nodeId: `${hostname().replace(/[^A-Za-z0-9._-]/g, '-')}-${process.pid}`, heartbeatInterval: 5, workers: 1, redis: { host: '127.0.0.1', port: 6379, db: 0, keyPrefix: 'bastion:', connectTimeout: 5000 } })
  t.ok(Object.isFrozen(c) && Object.isFrozen(c?.redis))
})

t.test('every cluster key is checked and named when wrong', async (t) => {
  t.match(refusal({ cluster: {} }), 'config cluster.redis: is required')
  t.match(refusal({ cluster: null }), 'config cluster: must be a mapping')
  t.match(refusal({ cluster: { redis: { hots: 'x' } } }), 'config cluster.redis.hots: unknown key')
  t.match(refusal({ cluster: { redis: {}, nodes: 2 } }), 'config cluster.nodes: unknown key')
  t.match(refusal({ cluster: { redis: { port: 0 } } }), 'config cluster.redis.port: must be an integer from 1 to 65535')
  t.match(refusal({ cluster: { redis: { db: 16 } } }), 'config cluster.redis.db: must be an integer from 0 to 15')
  t.match(refusal({ cluster: { redis: { host: 'a b' } } }), 'config cluster.redis.host:')
  t.match(refusal({ cluster: { redis: { connectTimeout: 10 } } }), 'config cluster.redis.connectTimeout:')
  // ':' would split aedes-persistence-redis' keys in the wrong place; '/', '+', '#' are topic syntax.
  for (const id of ['host:1', 'a/b', 'a+', '#', '']) t.match(refusal({ cluster: { nodeId: id, redis: {} } }), 'config cluster.nodeId:', id)
  for (const prefix of ['a*', 'x[1]', 'a b', '']) t.match(refusal({ cluster: { redis: { keyPrefix: prefix } } }), 'config cluster.redis.keyPrefix:', prefix)
})

t.test('cluster.heartbeatInterval: 5 s unless set, whole seconds from 1 to 300', async (t) => {
  t.equal(parseConfig({ cluster: { redis: {} } }, '/srv').cluster?.heartbeatInterval, 5)
  t.equal(parseConfig({ cluster: { redis: {}, heartbeatInterval: 1 } }, '/srv').cluster?.heartbeatInterval, 1)
  for (const v of [0, 301, 2.5, '5']) t.match(refusal({ cluster: { redis: {}, heartbeatInterval: v } }), 'config cluster.heartbeatInterval: must be an integer from 1 to 300', String(v))
})

t.test('the Redis password comes from the file, a file or the environment, and config check blanks it', async (t) => {
  t.match(refusal({ cluster: { redis: { password: 'a', passwordEnv: 'B' } } }), 'config cluster.redis: give one of password, passwordFile, passwordEnv')
  t.match(refusal({ cluster: { redis: { passwordEnv: 'NOPE_NOT_SET' } } }), 'config cluster.redis.passwordEnv: environment variable NOPE_NOT_SET is not set')
  const d = dir()
  writeFileSync(join(d, 'redis.pw'), 'from-a-file\n')
  t.equal(parseConfig({ cluster: { redis: { passwordFile: 'redis.pw' } } }, d).cluster?.redis.password, 'from-a-file')
  t.equal(parseConfig({ cluster: { redis: { passwordEnv: 'RPW' } } }, d, { env: { RPW: 'from-env' } }).cluster?.redis.password, 'from-env')
  const c = parseConfig({ cluster: { nodeId: 'n1', redis: { host: '10.0.0.4', password: 'redis-s3cret' } } }, d)
  const shown = JSON.stringify(redactedConfig(c))
  t.notMatch(shown, 'redis-s3cret')
  t.equal((redactedConfig(c) as any).cluster.redis.password, '[redacted]')
})

t.test('cluster.redis.tls: absent or false is plaintext, true is TLS verified against the system CAs', async (t) => {
  t.equal(parseConfig({ cluster: { redis: {} } }, '/srv').cluster?.redis.tls, undefined)
  t.equal(parseConfig({ cluster: { redis: { tls: false } } }, '/srv').cluster?.redis.tls, undefined)
  const c = parseConfig({ cluster: { redis: { tls: true } } }, '/srv')
  t.same(c.cluster?.redis.tls, { files: {} }, 'no CA of its own: the system\'s')
  t.ok(Object.isFrozen(c.cluster?.redis.tls))
  t.equal((redactedConfig(c) as any).cluster.redis.tls, true, 'config check shows it as written')
})

t.test('cluster.redis.tls files are read at load, relative to the config\'s folder, and config check shows their names, never the key', async (t) => {
  const d = dir()
  await initCertificates({ outDir: join(d, 'certs') })
  const client = await issueClientCertificate({ name: 'broker', dir: join(d, 'certs') })
  const c = parseConfig({ cluster: { redis: { tls: { ca: 'certs/ca.crt', cert: 'certs/broker.crt', key: 'certs/broker.key', servername: 'redis.internal' } } } }, d)
  const tls = c.cluster?.redis.tls
  const keyPem = readFileSync(client.key, 'utf8')
  t.equal(tls?.ca, readFileSync(join(d, 'certs', 'ca.crt'), 'utf8'))
  t.equal(tls?.cert, readFileSync(client.cert, 'utf8'))
  t.equal(tls?.key, keyPem)
  t.equal(tls?.servername, 'redis.internal')
  t.same(tls?.files, { ca: join(d, 'certs', 'ca.crt'), cert: client.cert, key: client.key })
  const shown = JSON.stringify(redactedConfig(c))
  t.notMatch(shown, 'PRIVATE KEY', 'no key material')
  t.notMatch(shown, keyPem.split('\n')[1] as string, 'not even one line of it')
  t.notMatch(shown, 'BEGIN CERTIFICATE', 'nor the certificates\' text')
  t.same((redactedConfig(c) as any).cluster.redis.tls, { ca: join(d, 'certs', 'ca.crt'), cert: client.cert, key: client.key, servername: 'redis.internal' })
  // Only a CA: Redis without tls-auth-clients.
  t.same(parseConfig({ cluster: { redis: { tls: { ca: 'certs/ca.crt' } } } }, d).cluster?.redis.tls?.files, { ca: join(d, 'certs', 'ca.crt') })
})

t.test('config check run as an operator runs it prints the key file\'s name, never its contents', async (t) => {
  const d = dir()
  await initCertificates({ outDir: join(d, 'certs') })
  const client = await issueClientCertificate({ name: 'broker', dir: join(d, 'certs') })
  const file = join(d, 'bastion.yaml')
  writeFileSync(file, ['cluster:', '  redis:', '    tls: { ca: certs/ca.crt, cert: certs/broker.crt, key: certs/broker.key }', ''].join('\n'))
  let printed = ''
  await configCommand(['check', '--config', file], (s) => { printed += s })
  t.match(printed, /^config ok/)
  t.match(printed, client.key, 'the file is named')
  t.notMatch(printed, 'PRIVATE KEY')
  for (const line of readFileSync(client.key, 'utf8').split('\n').filter((l) => l.length > 20)) t.notMatch(printed, line)
})

t.test('every cluster.redis.tls key is checked and named when wrong', async (t) => {
  const d = dir()
  await initCertificates({ outDir: join(d, 'certs') })
  await issueClientCertificate({ name: 'broker', dir: join(d, 'certs') })
  await initCertificates({ outDir: join(d, 'other') })
  const refused = (tls: unknown): string => {
    try {
      parseConfig({ cluster: { redis: { tls } } }, d)
    } catch (err) {
      return (err as Error).message
    }
    throw new Error('accepted')
  }
  for (const v of ['yes', 1, null, ['ca.crt']]) t.match(refused(v), 'config cluster.redis.tls: must be true, false or a mapping { ca, cert, key, servername }', JSON.stringify(v))
  t.match(refused({ ca: 3 }), 'config cluster.redis.tls.ca: must be a non-empty string')
  t.match(refused({ ca: '' }), 'config cluster.redis.tls.ca: must be a non-empty string')
  t.match(refused({ servername: true }), 'config cluster.redis.tls.servername: must be a non-empty string')
  t.match(refused({ servername: '10.0.0.4' }), 'config cluster.redis.tls.servername: "10.0.0.4" is not a DNS name')
  t.match(refused({ servername: 'a b' }), 'config cluster.redis.tls.servername: "a b" is not a DNS name')
  t.match(refused({ rejectUnauthorized: false }), 'config cluster.redis.tls.rejectUnauthorized: unknown key (allowed: ca, cert, key, servername)', 'verification cannot be turned off')
  t.match(refused(JSON.parse('{"__proto__": {"ca": "certs/ca.crt"}}')), 'config cluster.redis.tls.__proto__: unknown key')
  t.match(refused(JSON.parse('{"ca": "certs/ca.crt", "constructor": 1}')), 'config cluster.redis.tls.constructor: unknown key')
  // One line each, naming the key and the file as resolved.
  t.equal(refused({ ca: 'certs/nope.crt' }), `config cluster.redis.tls.ca: cannot read ${join(d, 'certs', 'nope.crt')}: ENOENT`)
  t.equal(refused({ ca: 'certs' }), `config cluster.redis.tls.ca: cannot read ${join(d, 'certs')}: EISDIR`)
  t.equal(refused({ cert: 'certs/broker.crt', key: 'certs/gone.key' }), `config cluster.redis.tls.key: cannot read ${join(d, 'certs', 'gone.key')}: ENOENT`)
  t.equal(refused({ cert: 'certs/gone.crt', key: 'certs/broker.key' }), `config cluster.redis.tls.cert: cannot read ${join(d, 'certs', 'gone.crt')}: ENOENT`)
  t.match(refused({ cert: 'certs/broker.crt' }), 'config cluster.redis.tls: give cert and key together (got only cert)')
  t.match(refused({ key: 'certs/broker.key' }), 'config cluster.redis.tls: give cert and key together (got only key)')
  t.equal(refused({ ca: 'certs/ca.key' }), `config cluster.redis.tls.ca: ${join(d, 'certs', 'ca.key')} is not a PEM certificate`)
  t.equal(refused({ cert: 'certs/broker.key', key: 'certs/broker.key' }), `config cluster.redis.tls.cert: ${join(d, 'certs', 'broker.key')} is not a PEM certificate`)
  t.equal(refused({ cert: 'certs/broker.crt', key: 'certs/broker.crt' }), `config cluster.redis.tls.key: ${join(d, 'certs', 'broker.crt')} is not a PEM private key`)
  t.equal(refused({ cert: 'certs/broker.crt', key: 'other/server.key' }),
    `config cluster.redis.tls.key: ${join(d, 'other', 'server.key')} is not the private key of the certificate in ${join(d, 'certs', 'broker.crt')}`)
  for (const v of [{ ca: 'certs/nope.crt' }, { cert: 'certs/broker.crt', key: 'other/server.key' }]) t.notMatch(refused(v), 'PRIVATE KEY', 'no error carries key material')
  t.ok(refused({ ca: 'certs/nope.crt' }).split('\n').length === 1, 'one line')
})
