// The deployment files, checked without a Docker engine or a booted systemd: what can be known
// from the repository (COPY sources, ports, volumes, secrets, the table, the config itself) is.
import t from 'tap'
import { execFile, spawnSync } from 'node:child_process'
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join, posix, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { parseConfig } from '../../src/config/schema.js'
import { scratch } from '../helpers/scratch.js'

const scratchDir = scratch('bastion-deploy-')

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)))
const DOCKER = join(ROOT, 'docker')
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8')

// --- Dockerfile -------------------------------------------------------------------------------
interface Instruction { op: string; args: string }
interface Stage { from: string; name?: string; steps: Instruction[] }

/** Joins `\` continuations, drops comments (also inside continuations, as Docker does). */
function parseDockerfile (text: string): Stage[] {
  const stages: Stage[] = []
  let buf = ''
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line.startsWith('#') || (line === '' && buf === '')) continue
    buf += (buf === '' ? '' : ' ') + line.replace(/\\$/, '').trim()
    if (line.endsWith('\\')) continue
    const [op = '', ...rest] = buf.split(/\s+/)
    buf = ''
    const args = rest.join(' ')
    if (op.toUpperCase() === 'FROM') {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)
      stages.push({ from: m?.[1] ?? args, ...(m?.[2] === undefined ? {} : { name: m[2] }), steps: [] })
    } else stages.at(-1)?.steps.push({ op: op.toUpperCase(), args })
  }
  return stages
}

function copyParts (args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.split(/\s+/)
  const flags = words.filter((w) => w.startsWith('--'))
  const paths = words.filter((w) => !w.startsWith('--'))
  const from = flags.find((f) => f.startsWith('--from='))?.slice('--from='.length)
  return { ...(from === undefined ? {} : { from }), sources: paths.slice(0, -1), dest: paths.at(-1) ?? '' }
}

const envOf = (stage: Stage): Record<string, string> => Object.fromEntries(stage.steps
  .filter((s) => s.op === 'ENV')
  // KEY=VALUE pairs; a value may hold '=' itself (GLIBC_TUNABLES=glibc.malloc.x=1).
  .flatMap((s) => s.args.split(/\s+/).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)] as [string, string])))

const stages = parseDockerfile(read('docker/Dockerfile'))
const build = stages[0] as Stage
const runtime = stages.at(-1) as Stage
const ignored = read('docker/Dockerfile.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
const isIgnored = (src: string): boolean => ignored.some((p) => {
  const q = p.replace(/^\*\*\//, '')
  return src === q || src.startsWith(q + '/') || (p.startsWith('**/') && src.split('/').includes(q))
})

t.test('every COPY source exists in the repository and is not excluded from the build context', async (t) => {
  for (const stage of stages) {
    for (const { sources, from } of stage.steps.filter((s) => s.op === 'COPY').map((s) => copyParts(s.args))) {
      if (from !== undefined) continue
      t.ok(sources.length > 0, 'COPY names a source')
      for (const src of sources) {
        t.ok(existsSync(join(ROOT, src)), `${src} exists`)
        t.notOk(isIgnored(src), `${src} is not in Dockerfile.dockerignore`)
      }
    }
  }
  for (const p of ['node_modules', 'dist', '.git', 'data', 'certs', '.tap']) t.ok(isIgnored(p), `${p} is kept out of the context`)
  // The classic builder ignores docker/Dockerfile.dockerignore and reads the context root's.
  const rootIgnored = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'))
  t.same(rootIgnored, ignored, '.dockerignore at the root lists the same paths, for the classic builder')
})

t.test('the runtime stage takes dist/ from the tsc stage and node_modules from the stage that compiles the native addon', async (t) => {
  t.equal(stages.length, 3)
  const deps = stages[1] as Stage
  for (const st of stages) t.equal(st.from, 'node:20-bookworm-slim', `${st.name ?? 'runtime'} on the same base: the addon built in deps runs in runtime`)
  const runs = build.steps.filter((s) => s.op === 'RUN').map((s) => s.args)
  t.ok(runs.includes('npm ci --ignore-scripts'), 'builder installs all dependencies without running prepare early')
  t.ok(runs.includes('npm run build'), 'builder runs the build script')
  const workdir = build.steps.filter((s) => s.op === 'WORKDIR').at(-1)?.args ?? '/'
  const outDir = (JSON.parse(read('tsconfig.json')) as { compilerOptions: { outDir: string } }).compilerOptions.outDir
  const depsRuns = deps.steps.filter((s) => s.op === 'RUN').map((s) => s.args)
  t.ok(depsRuns.some((r) => /apt-get install -y --no-install-recommends python3 make g\+\+/.test(r)), 'the compiler better-sqlite3 falls back to is in the deps stage')
  t.ok(depsRuns.some((r) => /npm ci --omit=dev --ignore-scripts && npm rebuild better-sqlite3/.test(r)), 'production dependencies only, no prepare, then the addon\'s own install script')
  const fromStages = runtime.steps.filter((s) => s.op === 'COPY').map((s) => copyParts(s.args)).filter((c) => c.from !== undefined)
  t.same(fromStages.map((c) => [c.from, c.sources]), [[deps.name, ['/app/node_modules']], [build.name, [posix.join(workdir, outDir)]]], 'only node_modules and dist/ cross stages')
  const runtimeRuns = runtime.steps.filter((s) => s.op === 'RUN').map((s) => s.args)
  t.notOk(runtimeRuns.some((r) => /apt-get|npm ci/.test(r)), 'no compiler and no second install in the runtime image')
})

t.test('the runtime stage runs as a non-root user with the CLI as entrypoint and 8883 exposed', async (t) => {
  const user = runtime.steps.filter((s) => s.op === 'USER').at(-1)?.args
  t.ok(user !== undefined && !/^(root|0)(:|$)/.test(user), `USER ${user} is not root`)
  t.same(runtime.steps.filter((s) => s.op === 'EXPOSE').map((s) => s.args), ['8883'])
  const pkg = JSON.parse(read('package.json')) as { bin: Record<string, string> }
  const entry = JSON.parse(runtime.steps.find((s) => s.op === 'ENTRYPOINT')?.args ?? '[]') as string[]
  t.same(entry, ['node', posix.join('/app', pkg.bin['mqtt-bastion'] ?? '')], 'ENTRYPOINT is the package bin')
  t.ok(existsSync(join(ROOT, 'src/cli/main.ts')), 'the entrypoint is built from src/cli/main.ts')
  t.same(JSON.parse(runtime.steps.find((s) => s.op === 'CMD')?.args ?? '[]'), ['start'])
  t.equal(envOf(runtime).BASTION_CONFIG, '/etc/mqtt-bastion/bastion.yaml')
})

t.test('the HEALTHCHECK command exits 0 on /healthz 200 and 1 on 503 or a closed port', async (t) => {
  const hc = runtime.steps.find((s) => s.op === 'HEALTHCHECK')?.args ?? ''
  const argv = JSON.parse(hc.slice(hc.indexOf('CMD ') + 4)) as string[]
  t.equal(argv[0], 'node', 'runs with node (no curl in slim images)')
  t.equal(envOf(runtime).BASTION_HEALTHCHECK_URL, 'http://127.0.0.1:9464/healthz')
  let status = 200
  const paths: string[] = []
  const server = createServer((req, res) => { paths.push(req.url ?? ''); res.statusCode = status; res.end(status === 200 ? 'ok' : 'unavailable') })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/healthz`
  const run = async (u: string): Promise<number> => await new Promise((r) => {
    execFile(process.execPath, argv.slice(1), { env: { BASTION_HEALTHCHECK_URL: u }, timeout: 10_000 }, (err) => r(err === null ? 0 : (typeof err.code === 'number' ? err.code : -1)))
  })
  t.equal(await run(url), 0, '200 is healthy')
  status = 503
  t.equal(await run(url), 1, '503 is unhealthy')
  await new Promise((r) => server.close(r))
  t.equal(await run(url), 1, 'nothing listening is unhealthy')
  t.same(paths, ['/healthz', '/healthz'])
})

// --- compose.yaml -----------------------------------------------------------------------------
type Raw = Record<string, any>
const compose = parseYaml(read('docker/compose.yaml')) as Raw
const services = compose.services as Record<string, Raw>

function published (p: unknown): { published: string; target: string } {
  if (typeof p === 'object' && p !== null) return { published: String((p as Raw).published), target: String((p as Raw).target) }
  const parts = String(p).split(':')
  return { published: parts.at(-2) ?? '', target: parts.at(-1) ?? '' }
}
function mount (v: unknown): { source: string; target: string; readOnly: boolean } {
  if (typeof v === 'object' && v !== null) return { source: (v as Raw).source, target: (v as Raw).target, readOnly: (v as Raw).read_only === true }
  const [source = '', target = '', mode = ''] = String(v).split(':')
  return { source, target, readOnly: mode.split(',').includes('ro') }
}

t.test('the compose file has a broker built from the repo root and a MariaDB it waits for', async (t) => {
  t.same(Object.keys(services).sort(), ['broker', 'db'])
  const b = services.broker as Raw
  t.ok(existsSync(join(DOCKER, b.build.context, b.build.dockerfile)), 'build context + dockerfile point at docker/Dockerfile')
  t.equal(resolve(DOCKER, b.build.context), ROOT, 'context is the repository root')
  t.same(b.depends_on, { db: { condition: 'service_healthy' } })
  t.match(services.db, { image: 'mariadb:11', healthcheck: { test: ['CMD', 'healthcheck.sh', '--connect', '--innodb_initialized'] } })
  t.equal(b.read_only, true, 'the broker container filesystem is read-only')
  t.same(b.cap_drop, ['ALL'])
})

t.test('only 8883 is published and the database has no ports', async (t) => {
  t.same((services.broker as Raw).ports.map(published), [{ published: '8883', target: '8883' }])
  for (const [name, s] of Object.entries(services)) {
    if (name !== 'broker') t.equal(s.ports, undefined, `${name} publishes nothing`)
    t.not(s.network_mode, 'host', `${name} is not on the host network`)
  }
})

t.test('volumes are named or bind existing files, and the broker gets config, certs and data', async (t) => {
  const declared = Object.keys(compose.volumes ?? {})
  for (const [name, s] of Object.entries(services)) {
    for (const m of (s.volumes ?? []).map(mount)) {
      if (/^[./~]/.test(m.source)) t.ok(existsSync(join(DOCKER, m.source)), `${name}: bind source ${m.source} exists`)
      else t.ok(declared.includes(m.source), `${name}: volume ${m.source} is declared at the top level`)
    }
  }
  const b = ((services.broker as Raw).volumes as unknown[]).map(mount)
  t.same(b.find((m) => m.target === '/etc/mqtt-bastion/bastion.yaml'), { source: './bastion.yaml', target: '/etc/mqtt-bastion/bastion.yaml', readOnly: true }, 'config is read-only')
  t.match(b.find((m) => m.target === '/etc/mqtt-bastion/certs'), { source: 'certs' })
  t.match(b.find((m) => m.target === '/var/lib/mqtt-bastion'), { source: 'data' })
  t.match(((services.db as Raw).volumes as unknown[]).map(mount), [{ target: '/var/lib/mysql' }, { source: './initdb', target: '/docker-entrypoint-initdb.d', readOnly: true }])
})

t.test('the database password is a secret file, never a value in the YAML', async (t) => {
  t.same(Object.keys(compose.secrets), ['db_password'])
  t.same(compose.secrets.db_password, { file: './secrets/db_password.txt' })
  t.ok(existsSync(join(DOCKER, 'secrets/.gitignore')), 'the secrets folder exists and git ignores its contents')
  t.match(read('docker/secrets/.gitignore'), /^\*$/m)
  for (const [name, s] of Object.entries(services)) {
    t.same(s.secrets, ['db_password'], `${name} receives the secret`)
    for (const key of Object.keys(s.environment ?? {})) {
      if (/PASSWORD/.test(key)) t.ok(key.endsWith('_FILE') || key === 'MARIADB_RANDOM_ROOT_PASSWORD', `${name}: ${key} is not a password value`)
    }
    t.equal(s.env_file, undefined)
  }
  t.equal((services.db as Raw).environment.MARIADB_PASSWORD_FILE, '/run/secrets/db_password')
})

// --- initdb SQL -------------------------------------------------------------------------------
const normalizeSql = (s: string): string => s.replace(/--[^\n]*/g, '').replace(/\s+/g, ' ').replace(/\s*([(),;])\s*/g, '$1').trim().toLowerCase()
function columns (sql: string): string[] {
  const body = normalizeSql(sql).replace(/^create table users\(/, '').replace(/\);?$/, '')
  return body.split(',').map((c) => c.split(' ')[0] ?? '')
}

t.test('the init SQL creates the users table of docs/mysql.md', async (t) => {
  const readme = /```sql\n(CREATE TABLE users \([\s\S]*?\);)\n```/.exec(read('docs/mysql.md'))?.[1]
  t.ok(readme, 'docs/mysql.md has the table')
  const init = read('docker/initdb/01-users.sql')
  const stmt = /CREATE TABLE users \([\s\S]*?\);/.exec(init)?.[0] ?? ''
  t.same(columns(stmt), columns(readme ?? ''), 'same columns in the same order')
  t.same(columns(stmt), ['id', 'username', 'password', 'totp_secret'])
  t.equal(normalizeSql(stmt), normalizeSql(readme ?? ''), 'same definitions')
})

// --- docker/bastion.yaml ----------------------------------------------------------------------
t.test('docker/bastion.yaml passes the broker\'s own validation with the compose paths', async (t) => {
  const doc = parseYaml(read('docker/bastion.yaml')) as Raw
  const db = (services.db as Raw).environment as Raw
  t.equal(doc.auth.store.passwordFile, '/run/secrets/db_password', 'reads the compose secret')
  t.equal(doc.auth.store.password, undefined)
  // The secret only exists inside the container: validate a copy pointing at a stand-in file.
  const dir = scratchDir()
  const secret = join(dir, 'db_password')
  writeFileSync(secret, 'stand-in\n', { mode: 0o600 })
  const config = parseConfig({ ...doc, auth: { ...doc.auth, store: { ...doc.auth.store, passwordFile: secret } } }, '/etc/mqtt-bastion', { env: {} })
  t.match(config.auth.store, { type: 'mysql', host: 'db', port: 3306, user: db.MARIADB_USER, database: db.MARIADB_DATABASE, password: 'stand-in' })
  t.match(config.listeners, [{ type: 'tls', port: 8883, cert: '/etc/mqtt-bastion/certs/server.crt', key: '/etc/mqtt-bastion/certs/server.key' }])
  t.same(config.monitoring, { enabled: true, host: '127.0.0.1', port: 9464 }, 'the listener the HEALTHCHECK asks')
  t.equal(new URL(envOf(runtime).BASTION_HEALTHCHECK_URL ?? '').port, String(config.monitoring.port))
})

// --- systemd ----------------------------------------------------------------------------------
const UNIT = join(ROOT, 'scripts/mqtt-bastion.service')
function parseUnit (text: string): Map<string, Array<[string, string]>> {
  const sections = new Map<string, Array<[string, string]>>()
  let current: Array<[string, string]> = []
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const sec = /^\[(.+)\]$/.exec(line)
    if (sec !== null) { current = []; sections.set(sec[1] as string, current); continue }
    const eq = line.indexOf('=')
    current.push([line.slice(0, eq).trim(), line.slice(eq + 1).trim()])
  }
  return sections
}

t.test('the systemd unit restarts always, runs as its own user and is hardened', async (t) => {
  const unit = parseUnit(readFileSync(UNIT, 'utf8'))
  const svc = unit.get('Service') ?? []
  const all = (k: string): string[] => svc.filter(([key]) => key === k).map(([, v]) => v)
  const one = (k: string): string | undefined => all(k).at(-1)
  t.equal(one('ExecStart'), '/usr/bin/node /opt/mqtt-bastion/dist/cli/main.js start --config /etc/mqtt-bastion/bastion.yaml')
  t.equal(one('ExecReload'), '/bin/kill -HUP $MAINPID', 'reload is SIGHUP')
  t.equal(one('Restart'), 'always')
  t.equal(one('User'), 'mqtt-bastion')
  t.not(one('DynamicUser'), 'yes')
  const expected: Record<string, string> = { NoNewPrivileges: 'yes', ProtectSystem: 'strict', PrivateTmp: 'yes', ProtectHome: 'yes', CapabilityBoundingSet: '', AmbientCapabilities: '', ProtectKernelTunables: 'yes', LockPersonality: 'yes', RestrictAddressFamilies: 'AF_INET AF_INET6 AF_UNIX' }
  for (const [k, v] of Object.entries(expected)) t.equal(one(k), v, `${k}=${v}`)
  t.ok(all('ReadWritePaths').join(' ').split(/\s+/).includes('/var/lib/mqtt-bastion'), 'data dir is writable')
  t.not(one('MemoryDenyWriteExecute'), 'yes', 'V8\'s JIT needs writable+executable memory')
  t.same(unit.get('Install'), [['WantedBy', 'multi-user.target']])
})

t.test('systemd-analyze verify accepts the unit without warnings', async (t) => {
  if (spawnSync('systemd-analyze', ['--version']).error !== undefined) {
    t.comment('systemd-analyze is not installed here: only this check is left out (apt-get install systemd runs it); the directive checks above still ran')
    t.pass('directives checked without systemd-analyze')
    return
  }
  let text = readFileSync(UNIT, 'utf8')
  // verify insists the ExecStart binary exists; where node lives elsewhere, check that one.
  if (!existsSync('/usr/bin/node') || !statSync('/usr/bin/node').isFile()) text = text.replace('/usr/bin/node ', `${process.execPath} `)
  const copy = join(scratchDir(), 'mqtt-bastion.service')
  writeFileSync(copy, text)
  const r = spawnSync('systemd-analyze', ['verify', '--man=no', copy], { encoding: 'utf8', timeout: 30_000 })
  t.equal(r.status, 0, `exit status (stderr: ${r.stderr.trim()})`)
  // Unknown keys and bad values are only warnings (exit 0): any line naming the unit fails.
  t.same(r.stderr.split('\n').filter((l) => l.includes('mqtt-bastion.service')), [], 'no warnings about the unit')
})

// --- memory: one malloc setting wherever we start the broker ----------------------------------
t.test('npm start, the image and the systemd unit give the broker the same GLIBC_TUNABLES (docs/deploy.md, "Memory")', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  const fromStart = /^GLIBC_TUNABLES=\$\{GLIBC_TUNABLES:-([^}]+)\} node dist\/cli\/main\.js start$/.exec(pkg.scripts.start ?? '')?.[1]
  t.equal(fromStart, 'glibc.malloc.mmap_threshold=65536', 'npm start sets it unless the environment already does')
  t.equal(envOf(runtime).GLIBC_TUNABLES, fromStart, 'the runtime image sets the same')
  const svc = parseUnit(readFileSync(UNIT, 'utf8')).get('Service') ?? []
  const unitEnv = svc.filter(([k]) => k === 'Environment').map(([, v]) => v).find((v) => v.startsWith('GLIBC_TUNABLES='))
  t.equal(unitEnv, `GLIBC_TUNABLES=${fromStart}`, 'the systemd unit sets the same')
  // And the docs say what it is for.
  t.match(readFileSync(join(ROOT, 'docs/deploy.md'), 'utf8'), /## Memory[\s\S]*glibc\.malloc\.mmap_threshold=65536/)
})
