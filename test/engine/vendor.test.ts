// The patch set (patches/aedes) is applied to aedes by the build, every time and everywhere: in
// this checkout, in a folder laid out as the container's build stage, and in a program that
// installs mqtt-bastion beside an unpatched aedes that npm hoisted.
import t from 'tap'
import { execFile } from 'node:child_process'
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import bcrypt from 'bcryptjs'
import mqtt from 'mqtt'
import { initCertificates } from '../../src/certs/issue.js'
import { currentCode, newSecret } from '../../src/crypto/totp.js'
import { createFileStore } from '../../src/stores/file.js'

const run = promisify(execFile)
const ROOT = process.cwd()
const PATCHES = readdirSync(join(ROOT, 'patches', 'aedes')).filter((f) => f.endsWith('.patch')).sort()
const MQTT_PACKET_PATCHES = readdirSync(join(ROOT, 'patches', 'mqtt-packet')).filter((f) => f.endsWith('.patch')).sort()
const read = (p: string): string => readFileSync(p, 'utf8')

/** A throwaway folder removed when the test ends. */
function scratch (t: Tap.Test, name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `bastion-${name}-`))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('the build carries every patch of patches/aedes, in order, into dist/vendor/aedes', async (t) => {
  t.ok(PATCHES.length >= 9, `${PATCHES.length} patches`)
  const applied = JSON.parse(read(join(ROOT, 'dist', 'vendor', 'aedes', 'patches.json')))
  t.same(applied, { aedes: '2.0.0-beta.1', patches: PATCHES, mqttPacket: '9.0.2', mqttPacketPatches: MQTT_PACKET_PATCHES })
  t.not(read(join(ROOT, 'dist', 'vendor', 'aedes', 'lib', 'client.js')), read(join(ROOT, 'node_modules', 'aedes', 'lib', 'client.js')), 'the copy differs from the registry release')
  t.not(read(join(ROOT, 'dist', 'vendor', 'mqtt-packet', 'parser.js')), read(join(ROOT, 'node_modules', 'mqtt-packet', 'parser.js')), 'so does the mqtt-packet copy')
  for (const f of ['lib/client.js', 'lib/write.js']) {
    t.match(read(join(ROOT, 'dist', 'vendor', 'aedes', f)), /^import mqtt from '\.\.\/\.\.\/mqtt-packet\/mqtt\.js'$/m, `${f} imports the patched mqtt-packet`)
  }
  const { ENGINE } = await import('../../src/engine/aedes.js')
  t.same(ENGINE, applied, 'the engine module reports what it runs')
})

t.test('every patch explains itself, names a test that exists and is listed in patches/README.md', async (t) => {
  const readme = read(join(ROOT, 'patches', 'README.md'))
  for (const [set, name] of [...PATCHES.map((p) => ['aedes', p]), ...MQTT_PACKET_PATCHES.map((p) => ['mqtt-packet', p])] as Array<[string, string]>) {
    const text = read(join(ROOT, 'patches', set, name))
    t.match(text, /^Subject: \S.+\n\n\S/, `${name} starts with a subject and an explanation`)
    const tests = /^Test: (.+)$/m.exec(text)?.[1]?.match(/test\/[\w./-]+\.test\.ts/g) ?? []
    t.ok(tests.length > 0, `${name} names its test`)
    for (const file of tests) t.ok(readdirSync(join(ROOT, file, '..')).includes(file.split('/').at(-1) as string), `${name}: ${file} exists`)
    t.ok(readme.includes(name.replace(/\.patch$/, '')), `${name} is in the README table`)
  }
})

/** A folder with the files the container's build stage copies, and this checkout's node_modules. */
function buildStage (t: Tap.Test): string {
  const dir = scratch(t, 'build-stage')
  for (const f of ['package.json', 'tsconfig.json', 'src', 'patches', 'scripts/vendor-aedes.mjs']) cpSync(join(ROOT, f), join(dir, f), { recursive: true })
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'))
  return dir
}

t.test('the container build stage (npm run build on the copied sources) produces the patched engine', async (t) => {
  const dir = buildStage(t)
  await run('npm', ['run', 'build'], { cwd: dir, timeout: 120_000 })
  t.same(JSON.parse(read(join(dir, 'dist', 'vendor', 'aedes', 'patches.json'))).patches, PATCHES)
  for (const f of ['aedes.js', 'lib/client.js', 'lib/handlers/publish.js', 'lib/handlers/subscribe.js']) {
    t.equal(read(join(dir, 'dist', 'vendor', 'aedes', f)), read(join(ROOT, 'dist', 'vendor', 'aedes', f)), `${f} as in this checkout`)
  }
})

t.test('a patch that no longer fits fails the build, naming the patch and the file', async (t) => {
  const dir = buildStage(t)
  writeFileSync(join(dir, 'patches', 'aedes', '0099-stale.patch'), [
    'Subject: a patch written for other sources', '', '--- a/lib/write.js', '+++ b/lib/write.js', '@@ -1,2 +1,2 @@',
    '-import mqtt from \'not-what-aedes-has\'', '+import mqtt from \'mqtt-packet\'', ' ', ''
  ].join('\n'))
  const err = await run(process.execPath, ['scripts/vendor-aedes.mjs'], { cwd: dir, timeout: 30_000 }).then(() => undefined, (e: { code: number; stderr: string }) => e)
  t.equal(err?.code, 1, 'exit 1')
  t.match(err?.stderr, /0099-stale\.patch does not apply to lib\/write\.js/)
})

t.test('installed as a dependency beside an unpatched aedes hoisted by npm, the package still runs the patched engine', async (t) => {
  const dir = scratch(t, 'consumer')
  const app = join(dir, 'app')
  const modules = join(app, 'node_modules')
  mkdirSync(modules, { recursive: true })
  // The published package, as npm installs it from a tarball (files: dist, patches).
  const { stdout } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: ROOT, timeout: 60_000 })
  const tarball = join(dir, (JSON.parse(stdout) as Array<{ filename: string }>)[0]?.filename ?? '')
  mkdirSync(join(modules, 'mqtt-bastion'))
  await run('tar', ['-xzf', tarball, '-C', join(modules, 'mqtt-bastion'), '--strip-components=1'])
  // Every dependency hoisted to the program's node_modules, aedes among them, unpatched.
  for (const name of readdirSync(join(ROOT, 'node_modules'))) {
    if (name !== 'mqtt-bastion' && !name.startsWith('.')) symlinkSync(join(ROOT, 'node_modules', name), join(modules, name))
  }
  await initCertificates({ outDir: join(app, 'certs') })
  const secret = newSecret()
  const store = createFileStore(join(app, 'data', 'users.json'))
  await store.add({ username: 'dev', passwordHash: bcrypt.hashSync('consumer-pass', 4), totpSecret: secret, enabled: true, createdAt: new Date().toISOString() })
  await store.close()
  writeFileSync(join(app, 'main.mjs'), [
    "import { createBastion, parseConfig, ENGINE } from 'mqtt-bastion'",
    "const config = parseConfig({ listeners: [{ type: 'tls', host: '127.0.0.1', port: 0 }, { type: 'tcp', host: '127.0.0.1', port: 0 }], auth: { totp: { replayProtection: false } }, log: { level: 'silent' } }, process.cwd())",
    'const bastion = await createBastion(config)',
    "process.stdout.write(JSON.stringify({ port: bastion.listeners[1].port, engine: ENGINE, nullProto: Object.getPrototypeOf(bastion.broker.clients) === null }) + '\\n')",
    "process.on('SIGTERM', () => bastion.close().then(() => process.exit(0)))"
  ].join('\n'))
  const child = execFile(process.execPath, ['main.mjs'], { cwd: app })
  const exited = new Promise<number | null>((resolve) => child.on('exit', resolve))
  t.teardown(() => { child.kill() })
  const info = await new Promise<{ port: number; engine: { patches: string[]; mqttPacketPatches: string[] }; nullProto: boolean }>((resolve, reject) => {
    let out = ''
    child.stdout?.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('\n')) resolve(JSON.parse(out)) })
    let err = ''
    child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
    child.on('exit', (code) => reject(new Error(`app exited ${String(code)} before listening: ${err}`)))
  })
  t.same(info.engine.patches, PATCHES, 'the engine inside the installed package carries the patch set')
  t.same(info.engine.mqttPacketPatches, MQTT_PACKET_PATCHES, 'and mqtt-packet\'s')
  t.ok(info.nullProto, 'the running broker keeps its clients in a null-prototype map')
  // The crash the first patch fixes, through the installed package: a second login with the
  // client id `constructor` takes the first one over instead of killing the process.
  const login = async (): Promise<mqtt.MqttClient> => await mqtt.connectAsync({
    host: '127.0.0.1', port: info.port, protocolVersion: 5, reconnectPeriod: 0, clientId: 'constructor',
    username: `dev|${currentCode(secret)}`, password: 'consumer-pass'
  })
  const first = await login()
  first.on('error', () => {})
  const second = await login()
  t.equal((second as any).connackPacket.reasonCode, 0, 'the second login with client id constructor is accepted')
  await second.endAsync()
  first.end(true)
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'the program was still running and stopped cleanly')
})
