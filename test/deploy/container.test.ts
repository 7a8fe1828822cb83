// The container image, really built and really run, on a Docker engine this file starts for
// itself (Debian's docker.io, scripts/docker-engine.sh) in a temp dir and stops at the end. No
// registry is reachable, so the base image node:20-bookworm-slim is made locally first
// (scripts/docker-base-image.sh: Debian minbase + this machine's Node). Then the commands of
// docs/deploy.md, as `docker run` instead of compose: build docker/Dockerfile with the repo root
// as context, `certs init` and `user add` into named volumes, start read-only with no
// capabilities as uid 1000, wait for `(healthy)`, an MQTT round trip over TLS from the host with
// the CA read out of the volume, SIGHUP, `docker stop`. An engine that cannot start fails here.
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { createWriteStream, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { X509Certificate } from 'node:crypto'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { checkServerIdentity, connect as tlsConnect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import mqtt, { type MqttClient } from 'mqtt'
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml'
import { currentCode } from '../../src/crypto/totp.js'

// Bootstrap + build (better-sqlite3 is compiled from source: no prebuilt binary can be fetched)
// take a few minutes on 2 busy cores; tap's per-file default (package.json) is 240 s.
const FILE_TIMEOUT_MS = 20 * 60_000
t.setTimeout(FILE_TIMEOUT_MS)

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)))
const ENGINE = join(ROOT, 'scripts', 'docker-engine.sh')
const BASE_IMAGE = join(ROOT, 'scripts', 'docker-base-image.sh')
const IMAGE = 'mqtt-bastion:local' // docs/deploy.md's tag
const NAME = 'bastion'
const CERTS = '/etc/mqtt-bastion/certs'
const DATA = '/var/lib/mqtt-bastion'
const PASSWORD = 'correct horse battery staple'
const USER = 'alice'

// Everything lives in one folder: the engine (data root, exec root, socket), mmdebstrap's temp
// dir, the config. The engine's watchdog stops it and removes the folder should this process die
// before the teardown below.
const dir = mkdtempSync(join(tmpdir(), 'bastion-ctr-'))
t.teardown(() => {
  const r = spawnSync('bash', [ENGINE, 'stop', dir, '--remove'], { encoding: 'utf8', timeout: 300_000 })
  if (r.status !== 0) console.error(`docker-engine.sh stop: ${r.status ?? r.signal} ${r.stderr}`)
  rmSync(dir, { recursive: true, force: true })
})

const timings: Array<[string, number]> = []
const fileStart = Date.now()

interface Run { code: number | null; stdout: string; stderr: string; ms: number }

/** Runs a command to completion (killed after `timeoutMs`); output to `log` instead when given. */
async function run (cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number; log?: string; cwd?: string } = {}): Promise<Run> {
  const started = Date.now()
  const child = spawn(cmd, args, { cwd: o.cwd ?? dir, env: o.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  if (o.log !== undefined) {
    // Each line stamped with the seconds since the start, for the step timings.
    const f = createWriteStream(o.log)
    for (const stream of [child.stdout, child.stderr]) {
      let rest = ''
      stream.setEncoding('utf8').on('data', (d: string) => {
        const lines = (rest + d).split('\n')
        rest = lines.pop() as string
        for (const l of lines) f.write(`[${((Date.now() - started) / 1000).toFixed(1)}] ${l}\n`)
      }).on('end', () => { if (rest !== '') f.write(`[${((Date.now() - started) / 1000).toFixed(1)}] ${rest}\n`) })
    }
    child.on('close', () => f.end())
  } else {
    child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s })
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
  }
  child.stdin.on('error', () => {})
  child.stdin.end(o.input)
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000)
  const code = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)))
  clearTimeout(timer)
  return { code, stdout, stderr, ms: Date.now() - started }
}

const tail = (s: string, n = 40): string => s.trimEnd().split('\n').slice(-n).join('\n')
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))
async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo
      s.close(() => resolve(port))
    })
  })
}

// --- state shared by the steps, in order; a step whose input is missing fails, never skips ----
let engine: { env: NodeJS.ProcessEnv; docker: string; driver: string } | undefined
let built = false
let ca: string | undefined
let totpSecret: string | undefined
let running = false
let mqttPort = 0
let monitoringPort = 0
const clients: MqttClient[] = []
t.teardown(() => { for (const c of clients) c.end(true) })

function need<T> (v: T | undefined | false, what: string): T {
  if (v === undefined || v === false) throw new Error(`cannot run: ${what} failed earlier in this file`)
  return v
}
async function docker (args: string[], o: { input?: string; timeoutMs?: number; log?: string; cwd?: string } = {}): Promise<Run> {
  const e = need(engine, 'starting the Docker engine')
  return await run(e.docker, args, { ...o, env: e.env })
}
/** The broker's JSON log lines so far (`docker logs`: its standard output). */
async function brokerLogs (): Promise<Array<Record<string, any>>> {
  const r = await docker(['logs', NAME])
  return r.stdout.split('\n').flatMap((l) => { try { return [JSON.parse(l) as Record<string, any>] } catch { return [] } })
}
async function inspect (format: string, what = NAME): Promise<string> {
  return (await docker(['inspect', '--format', format, what])).stdout.trim()
}

// The hardening of docker/compose.yaml's broker service, for every run of the image (the
// one-off `run`s of compose apply the service's settings too).
const hardened = ['--network', 'host', '--read-only', '--tmpfs', '/tmp', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges:true']
const configFile = join(dir, 'config', 'bastion.yaml')
const volumes = ['-v', `${configFile}:/etc/mqtt-bastion/bastion.yaml:ro`, '-v', `bastion-certs:${CERTS}`, '-v', `bastion-data:${DATA}`]

t.test('a throwaway Docker engine starts (dockerd from Debian\'s docker.io, in a temp dir)', async (t) => {
  const r = await run('bash', [ENGINE, 'start', dir, '--watch', String(process.pid)], { timeoutMs: 90_000 })
  timings.push(['engine start', r.ms])
  if (!t.equal(r.code, 0, 'dockerd started and answers on its socket', { output: tail(r.stderr) })) return
  const kv = Object.fromEntries(r.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
  t.match(kv.DOCKER_HOST, /^unix:\/\//)
  // The classic builder: BuildKit would fetch the `# syntax=docker/dockerfile:1` frontend image
  // from Docker Hub. It reads only the context root's .dockerignore.
  engine = { env: { ...process.env, DOCKER_HOST: kv.DOCKER_HOST, DOCKER_CONFIG: kv.DOCKER_CONFIG, DOCKER_BUILDKIT: '0' }, docker: kv.DOCKER as string, driver: kv.STORAGE_DRIVER as string }
  const info = await docker(['info', '--format', '{{.ServerVersion}} {{.Driver}}'])
  t.equal(info.code, 0, 'the engine answers')
  t.comment(`engine ${info.stdout.trim()}`)
})

t.test('the base image node:20-bookworm-slim is made locally (no registry can be pulled from)', async (t) => {
  const e = need(engine, 'starting the Docker engine')
  mkdirSync(join(dir, 'tmp'))
  const r = await run('bash', [BASE_IMAGE, 'node:20-bookworm-slim'], { env: { ...e.env, DOCKER: e.docker, TMPDIR: join(dir, 'tmp') }, timeoutMs: 8 * 60_000 })
  timings.push(['base image (mmdebstrap + import)', r.ms])
  t.equal(r.code, 0, 'scripts/docker-base-image.sh', { output: tail(r.stderr) })
  t.equal((await docker(['image', 'inspect', '--format', '{{.Os}}', 'node:20-bookworm-slim'])).stdout.trim(), 'linux')
})

t.test('docker/Dockerfile builds, with the repository root as context and the root .dockerignore', async (t) => {
  need(engine, 'starting the Docker engine')
  const log = join(dir, 'build.log')
  // docs/deploy.md step 2's alternative; --network host: the engine has no bridge network. A
  // proxy this machine needs goes in as Docker's predefined build args (kept out of the image).
  const proxies = ['HTTP_PROXY', 'HTTPS_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'no_proxy'].filter((k) => process.env[k] !== undefined)
  const r = await docker(['build', '--network', 'host', ...proxies.flatMap((k) => ['--build-arg', k]), '-f', 'docker/Dockerfile', '-t', IMAGE, '.'], { cwd: ROOT, log, timeoutMs: 15 * 60_000 })
  timings.push(['docker build', r.ms])
  const out = readFileSync(log, 'utf8')
  if (!t.equal(r.code, 0, 'docker build', { output: tail(out, 60) })) return
  built = true
  // Where the build's time goes: each step's seconds, from the stamps of its "Step" lines.
  const steps = [...out.matchAll(/^\[([\d.]+)\] (Step \d+\/\d+ : .{0,60})/gm)].map((m) => ({ at: Number(m[1]), step: m[2] as string }))
  steps.forEach((s, i) => { const next = steps[i + 1]?.at ?? r.ms / 1000; if (next - s.at >= 5) t.comment(`${(next - s.at).toFixed(0).padStart(4)} s  ${s.step}`) })
  // node_modules, dist, .git... stay out: the context is a few MB, not hundreds.
  const m = /Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)/.exec(out)
  t.ok(m, 'the classic builder reports the context size')
  const mb = m === null ? Infinity : Number(m[1]) * ({ B: 1e-6, kB: 1e-3, MB: 1, GB: 1e3 } as Record<string, number>)[m[2] as string]!
  t.ok(mb < 20, `build context is ${m?.[1]} ${m?.[2]} (the root .dockerignore applies)`)
  t.match(out, /Step \d+\/\d+ : RUN npm ci --omit=dev --ignore-scripts/, 'the deps stage ran')
})

t.test('the image: uid 1000, the CLI as entrypoint, a HEALTHCHECK, and nothing but the runtime in /app', async (t) => {
  need(built, 'docker build')
  const cfg = JSON.parse(await inspect('{{json .Config}}', IMAGE)) as Record<string, any>
  t.equal(cfg.User, '1000:1000')
  t.same(cfg.Entrypoint, ['node', '/app/dist/cli/main.js'])
  t.same(cfg.Cmd, ['start'])
  t.same(Object.keys(cfg.ExposedPorts ?? {}), ['8883/tcp'])
  t.equal(cfg.Healthcheck?.Test?.[0], 'CMD', 'HEALTHCHECK runs a command')
  t.equal(cfg.Healthcheck?.Test?.[1], 'node')
  // What crossed from the build stages: dist/ and production node_modules (with the compiled
  // addon); no sources, no dev dependencies, no compiler.
  const r = await docker(['run', '--rm', ...hardened, '--entrypoint', 'sh', IMAGE, '-c',
    'ls -A /app; for p in /app/src /app/node_modules/typescript /app/node_modules/tap /usr/bin/g++ /usr/bin/make; do [ ! -e $p ] || echo "present: $p"; done; ls /app/node_modules/better-sqlite3/build/Release/better_sqlite3.node'])
  t.equal(r.code, 0, 'the image runs sh', { output: r.stderr })
  t.same(r.stdout.trim().split('\n'), ['dist', 'node_modules', 'package-lock.json', 'package.json', '/app/node_modules/better-sqlite3/build/Release/better_sqlite3.node'])
})

t.test('certificates and a user go into the named volumes through the image (docs/deploy.md steps 3 and 5)', async (t) => {
  need(built, 'docker build')
  // docker/bastion.yaml as shipped, except the store: its MySQL store needs the compose file's
  // MariaDB, whose image cannot be pulled here; SQLite on the data volume takes its place.
  const doc = parseYaml(readFileSync(join(ROOT, 'docker', 'bastion.yaml'), 'utf8')) as Record<string, any>
  t.equal(doc.auth.store.type, 'mysql')
  doc.auth.store = { type: 'sqlite', path: `${DATA}/users.db` }
  monitoringPort = await freePort()
  doc.monitoring.port = monitoringPort // host network: the host's ports
  mkdirSync(join(dir, 'config'))
  writeFileSync(configFile, stringifyYaml(doc), { mode: 0o644 })

  const init = await docker(['run', '--rm', ...hardened, ...volumes, IMAGE, 'certs', 'init', '--out', CERTS, '--san', 'DNS:localhost,IP:127.0.0.1'])
  t.equal(init.code, 0, 'certs init', { output: init.stderr })
  t.match(init.stdout, `wrote ${CERTS}/server.key`)
  // docs/deploy.md: "Devices need the CA certificate" (cat with the image's entrypoint replaced).
  const cat = await docker(['run', '--rm', ...hardened, ...volumes, '--entrypoint', 'cat', IMAGE, `${CERTS}/ca.crt`])
  t.equal(cat.code, 0, 'cat ca.crt', { output: cat.stderr })
  t.match(cat.stdout, /^-----BEGIN CERTIFICATE-----\n/)
  ca = cat.stdout
  const keyMode = await docker(['run', '--rm', ...hardened, ...volumes, '--entrypoint', 'stat', IMAGE, '-c', '%u %a', `${CERTS}/server.key`])
  t.equal(keyMode.stdout.trim(), '1000 600', 'the server key belongs to uid 1000, mode 0600')

  // Step 5 asks for the password; piped on standard input here (docker run -i).
  const add = await docker(['run', '--rm', '-i', ...hardened, ...volumes, IMAGE, 'user', 'add', USER, '--json'], { input: `${PASSWORD}\n` })
  t.equal(add.code, 0, 'user add', { output: add.stderr })
  totpSecret = (JSON.parse(add.stdout) as { totpSecret: string }).totpSecret
  t.match(totpSecret, /^[A-Z2-7]{26,}/)
  const list = await docker(['run', '--rm', ...hardened, ...volumes, IMAGE, 'user', 'list', '--json'])
  t.same((JSON.parse(list.stdout) as Array<{ user: string }>).map((u) => u.user), [USER], 'the user is in the data volume')
})

t.test('the broker runs read-only, with no capabilities, as uid 1000, and becomes (healthy)', async (t) => {
  need(ca, 'the certificates')
  mqttPort = await freePort()
  const started = Date.now()
  const r = await docker(['run', '-d', '--name', NAME, ...hardened, ...volumes,
    '-e', 'BASTION_HOST=127.0.0.1', '-e', `BASTION_PORT=${mqttPort}`,
    // The image's own HEALTHCHECK command, asked at the monitoring port chosen above, and more
    // often than the image's 30 s so the test is quick.
    '-e', `BASTION_HEALTHCHECK_URL=http://127.0.0.1:${monitoringPort}/healthz`,
    '--health-interval', '1s', '--health-start-period', '60s', IMAGE])
  if (!t.equal(r.code, 0, 'docker run -d', { output: r.stderr })) return
  running = true
  let status = ''
  for (let i = 0; i < 240 && Date.now() - started < 60_000; i++) {
    status = await inspect('{{.State.Health.Status}}')
    if (status === 'healthy' || status === 'unhealthy' || (await inspect('{{.State.Running}}')) !== 'true') break
    await sleep(250)
  }
  timings.push(['run until healthy', Date.now() - started])
  if (!t.equal(status, 'healthy', 'the container became healthy', { state: await inspect('{{json .State}}'), logs: (await docker(['logs', NAME])).stdout })) return
  const health = JSON.parse(await inspect('{{json .State.Health}}')) as { Log: Array<{ ExitCode: number }> }
  t.equal(health.Log.at(-1)?.ExitCode, 0, 'the image\'s HEALTHCHECK command exited 0')
  t.match((await docker(['ps', '--filter', `name=${NAME}`, '--format', '{{.Status}}'])).stdout, /\(healthy\)/, 'docker ps shows (healthy)')
  const ready = (await brokerLogs()).find((l) => l.event === 'broker.ready')
  t.same(ready?.listeners, [`tls://127.0.0.1:${mqttPort}`], 'listening where BASTION_HOST/BASTION_PORT say')

  const host = JSON.parse(await inspect('{{json .HostConfig}}')) as Record<string, any>
  t.equal(host.ReadonlyRootfs, true)
  t.same(host.CapDrop, ['ALL'])
  t.same(host.SecurityOpt, ['no-new-privileges:true'])
  const id = await docker(['exec', NAME, 'id', '-u'])
  t.equal(id.stdout.trim(), '1000', 'processes in the container run as uid 1000')
  const status1 = await docker(['exec', NAME, 'grep', '-E', '^(Uid|CapEff|CapPrm|NoNewPrivs):', '/proc/1/status'])
  const fields = Object.fromEntries(status1.stdout.trim().split('\n').map((l) => l.split(/:\s+/)))
  t.equal(fields.Uid?.split(/\s+/)[0], '1000', 'the broker (pid 1) is uid 1000')
  t.equal(fields.CapEff, '0000000000000000', 'the broker has no effective capabilities')
  t.equal(fields.CapPrm, '0000000000000000', 'nor permitted ones')
  t.equal(fields.NoNewPrivs, '1')
  // /home/node belongs to uid 1000: only the read-only root file system keeps it from writing.
  const touch = await docker(['exec', NAME, 'touch', '/home/node/x'])
  t.not(touch.code, 0, 'writing into the image fails, even where uid 1000 owns the folder')
  t.match(touch.stderr, /Read-only file system/)
  t.equal((await docker(['exec', NAME, 'touch', '/tmp/x'])).code, 0, 'the /tmp tmpfs is writable')
})

async function login (offset: number): Promise<MqttClient> {
  const c = await mqtt.connectAsync({
    host: '127.0.0.1', port: mqttPort, protocol: 'mqtts', ca: need(ca, 'the certificates'), servername: 'localhost', rejectUnauthorized: true,
    reconnectPeriod: 0, connectTimeout: 10_000, protocolVersion: 5,
    // docker/bastion.yaml has replay protection: each login needs a later TOTP step than the last.
    username: `${USER}|${currentCode(need(totpSecret, 'user add'), Date.now() + offset * 30_000)}`, password: PASSWORD
  })
  clients.push(c)
  return c
}
let subscriber: MqttClient | undefined
let publisher: MqttClient | undefined
async function roundTrip (t: Test, payload: string): Promise<void> {
  const sub = need(subscriber, 'the subscriber')
  const got = new Promise<{ topic: string; payload: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message within 10 s')), 10_000)
    sub.once('message', (topic, p) => { clearTimeout(timer); resolve({ topic, payload: p.toString() }) })
  })
  await need(publisher, 'the publisher').publishAsync(`metrics/${USER}/Temperatura`, payload, { qos: 1 })
  t.same(await got, { topic: `metrics/${USER}/Temperatura`, payload }, 'the subscriber received it')
}

t.test('a TLS publish/subscribe round trip from the host, trusting the CA from the certs volume', async (t) => {
  need(running, 'the broker container')
  subscriber = await login(0)
  const granted = await subscriber.subscribeAsync(`metrics/${USER}/#`, { qos: 1 })
  t.same(granted.map((g) => g.qos), [1], `metrics/${USER}/# granted`)
  publisher = await login(1)
  await roundTrip(t, '21.5')
})

/** The certificate the listener presents now: its SHA-256 fingerprint, and whether `trust` verifies it. */
async function served (trust: string): Promise<{ fingerprint: string; verified: boolean }> {
  return await new Promise((resolve, reject) => {
    const s = tlsConnect({ host: '127.0.0.1', port: mqttPort, servername: 'localhost', ca: trust, rejectUnauthorized: false })
    const timer = setTimeout(() => { s.destroy(); reject(new Error('no TLS handshake within 10 s')) }, 10_000)
    s.once('secureConnect', () => {
      clearTimeout(timer)
      resolve({ fingerprint: s.getPeerCertificate().fingerprint256, verified: s.authorized && checkServerIdentity('localhost', s.getPeerCertificate()) === undefined })
      s.destroy()
    })
    s.once('error', (err) => { clearTimeout(timer); reject(err) })
  })
}
const catFromVolume = async (file: string): Promise<string> =>
  (await docker(['run', '--rm', ...hardened, ...volumes, '--entrypoint', 'cat', IMAGE, `${CERTS}/${file}`])).stdout

t.test('renewed certificates, then SIGHUP (docker kill --signal HUP): the new ones are served, clients stay connected', async (t) => {
  need(running, 'the broker container')
  const oldCa = need(ca, 'the certificates')
  const old = await served(oldCa)
  t.ok(old.verified, 'before: the listener\'s certificate verifies against the CA from the volume')
  // Renewal as an operator would do it: a one-off run writing into the certs volume.
  const renew = await docker(['run', '--rm', ...hardened, ...volumes, IMAGE, 'certs', 'init', '--out', CERTS, '--san', 'DNS:localhost,IP:127.0.0.1', '--force'])
  t.equal(renew.code, 0, 'certs init --force', { output: renew.stderr })
  const newCa = await catFromVolume('ca.crt')
  const newCert = new X509Certificate(await catFromVolume('server.crt'))
  t.not(newCert.fingerprint256, old.fingerprint, 'a new server certificate is in the volume')
  t.equal((await served(oldCa)).fingerprint, old.fingerprint, 'without a reload the broker still serves the old one')

  const before = (await brokerLogs()).length
  const k = await docker(['kill', '--signal', 'HUP', NAME])
  t.equal(k.code, 0, 'docker kill --signal HUP', { output: k.stderr })
  let logs: Array<Record<string, any>> = []
  for (let i = 0; i < 60; i++) {
    logs = (await brokerLogs()).slice(before)
    if (logs.some((l) => l.event === 'reload.ok' && /listener .* certificates/.test(l.what))) break
    await sleep(250)
  }
  t.comment(`after SIGHUP: ${logs.map((l) => `${l.event as string}${l.what === undefined ? '' : ` (${l.what as string})`}`).join(', ')}`)
  t.ok(logs.some((l) => l.event === 'broker.reloading' && l.signal === 'SIGHUP'), 'broker.reloading logged')
  // (The SQLite store is read on every login: it has nothing to reload.)
  t.ok(logs.some((l) => l.event === 'reload.ok' && /^tls listener 127\.0\.0\.1:\d+ certificates$/.test(l.what)), 'reload.ok for the TLS listener\'s certificates')
  t.notOk(logs.some((l) => l.event === 'reload.failed'), 'no reload.failed')
  const now = await served(newCa)
  t.equal(now.fingerprint, newCert.fingerprint256, 'after SIGHUP the listener serves the renewed certificate')
  t.ok(now.verified, 'which verifies against the renewed CA')
  t.equal(await inspect('{{.State.Running}}'), 'true', 'the container still runs')
  t.ok(subscriber?.connected === true && publisher?.connected === true, 'no client was dropped')
  await roundTrip(t, '22.0')
})

t.test('docker stop is a graceful stop: exit code 0 within the stop timeout, MQTT 5 clients get DISCONNECT 0x8B', async (t) => {
  need(running, 'the broker container')
  const sub = need(subscriber, 'the subscriber')
  const disconnect = new Promise<number | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), 30_000)
    sub.once('disconnect', (p) => { clearTimeout(timer); resolve(p.reasonCode) })
  })
  const stop = await docker(['stop', '-t', '30', NAME], { timeoutMs: 60_000 })
  timings.push(['docker stop', stop.ms])
  t.equal(stop.code, 0, 'docker stop', { output: stop.stderr })
  t.ok(stop.ms < 30_000, `stopped in ${stop.ms} ms, before docker's SIGKILL at 30 s`)
  t.equal(await disconnect, 0x8b, 'the subscriber got DISCONNECT "server shutting down"')
  const state = JSON.parse(await inspect('{{json .State}}')) as Record<string, any>
  t.equal(state.ExitCode, 0, 'exit code 0 (SIGKILL would be 137)')
  t.equal(state.OOMKilled, false)
  const logs = await brokerLogs()
  t.ok(logs.some((l) => l.event === 'broker.stopping' && l.signal === 'SIGTERM'), 'broker.stopping on SIGTERM')
  t.equal(logs.at(-1)?.event, 'broker.stopped', 'broker.stopped is the last line')
  t.notOk(logs.some((l) => l.event === 'broker.stop_timeout' || l.event === 'broker.stop_failed'))
  const rm = await docker(['rm', NAME])
  t.equal(rm.code, 0, 'docker rm', { output: rm.stderr })
  running = false
})

t.test('timings', async (t) => {
  t.comment(`storage driver: ${engine?.driver ?? '-'}`)
  for (const [what, ms] of timings) t.comment(`${what}: ${(ms / 1000).toFixed(1)} s`)
  t.comment(`file so far: ${((Date.now() - fileStart) / 1000).toFixed(1)} s`)
  t.pass('reported')
})
