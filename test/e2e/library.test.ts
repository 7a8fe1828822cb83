// Embedding: the package's public entry point starts the same broker inside another program,
// and the pinned aedes speaks MQTT 5 (this file fails if either breaks).
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mqtt from 'mqtt'
import bcrypt from 'bcryptjs'
// Resolved through package.json "exports", as a consumer's import would be (the built dist/).
import { createBastion, parseConfig, type BastionConfig } from 'mqtt-bastion'
import { currentCode, newSecret } from '../../src/crypto/totp.js'
import { createSqliteStore } from '../../src/stores/sqlite.js'
import { initCertificates } from '../../src/certs/issue.js'

t.test('aedes is pinned at 2.0.0-beta.1, the release with MQTT 5', async (t) => {
  const pkg = JSON.parse(readFileSync(join(process.cwd(), 'package.json'), 'utf8'))
  t.equal(pkg.dependencies.aedes, '2.0.0-beta.1', 'exact pin in package.json')
  const installed = JSON.parse(readFileSync(join(process.cwd(), 'node_modules', 'aedes', 'package.json'), 'utf8'))
  t.equal(installed.version, '2.0.0-beta.1', 'installed version')
})

t.test('createBastion from the package starts a broker an MQTT 5 client can use', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-lib-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  await initCertificates({ outDir: join(dir, 'certs') })
  const config: BastionConfig = parseConfig({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }], log: { level: 'silent' } }, dir)
  const secret = newSecret()
  // The default store: SQLite, which the CLI writes while the broker runs.
  const store = createSqliteStore({ path: config.auth.store.path })
  await store.add({ username: 'lib', passwordHash: bcrypt.hashSync('library-pass', 4), totpSecret: secret, enabled: true, createdAt: new Date().toISOString() })
  await store.close()
  const bastion = await createBastion(config)
  t.teardown(() => bastion.close())
  t.equal(bastion.broker.version, '2.0.0-beta.1', 'the running broker is the pinned aedes')
  const c = await mqtt.connectAsync({
    host: '127.0.0.1', port: bastion.listeners[0]!.port, protocol: 'mqtts', ca: readFileSync(join(dir, 'certs', 'ca.crt')), servername: 'localhost',
    protocolVersion: 5, reconnectPeriod: 0, username: `lib|${currentCode(secret)}`, password: 'library-pass'
  })
  const connack = (c as any).connackPacket
  t.equal(connack.reasonCode, 0, 'MQTT 5 CONNACK with reason code 0')
  t.equal(connack.properties?.sharedSubscriptionAvailable, false, 'carrying MQTT 5 properties')
  await c.endAsync()
})
