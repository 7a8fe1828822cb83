// docker/compose.cluster.yaml (two brokers + Redis + MariaDB behind HAProxy), checked without a
// Docker engine or a registry (redis:7, mariadb:11 and haproxy:2.6 cannot be pulled here):
// the compose structure, every broker config it mounts through our own parser, haproxy.cfg
// through Debian's haproxy 2.6 (`haproxy -c`, then a short live run), and the redis service's
// exact command and healthcheck through Debian's redis-server 7.0. What stays unverified: the
// images themselves (their users, their entrypoints) and Docker's networking.
import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Socket } from 'node:net'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse as parseYaml } from 'yaml'
import { parseConfig } from '../../src/config/schema.js'
import { scratch } from '../helpers/scratch.js'
import { accepting, freePort } from '../helpers/ports.js'

type Raw = Record<string, any>
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)))
const DOCKER = join(ROOT, 'docker')
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8')
const scratchDir = scratch('bastion-compose-cluster-')
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

const composeText = read('docker/compose.cluster.yaml')
// merge: the two brokers share an `x-broker` anchor through `<<:` (Compose resolves it the same way).
const compose = parseYaml(composeText, { merge: true }) as Raw
const services = compose.services as Record<string, Raw>
const brokers = Object.keys(services).filter((n) => /^broker-\d+$/.test(n)).sort()

function mount (v: unknown): { source: string; target: string; readOnly: boolean } {
  if (typeof v === 'object' && v !== null) return { source: (v as Raw).source, target: (v as Raw).target, readOnly: (v as Raw).read_only === true }
  const [source = '', target = '', mode = ''] = String(v).split(':')
  return { source, target, readOnly: mode.split(',').includes('ro') }
}
const mountAt = (service: string, target: string): { source: string; target: string; readOnly: boolean } | undefined =>
  ((services[service]?.volumes ?? []) as unknown[]).map(mount).find((m) => m.target === target)
/** Compose turns `$$` into `$` before a command reaches the container. */
const unescape = (s: string): string => s.replace(/\$\$/g, '$')
const networksOf = (s: Raw): string[] => Array.isArray(s.networks) ? s.networks : Object.keys(s.networks ?? {})

// --- the broker configs, as the containers would load them -----------------------------------
const secretStandIns = scratchDir()
const STAND_IN = { '/run/secrets/db_password': 'db stand-in', '/run/secrets/redis_password': 'redis stand-in' } as Record<string, string>
for (const [path, value] of Object.entries(STAND_IN)) writeFileSync(join(secretStandIns, path.split('/').at(-1) as string), value + '\n', { mode: 0o600 })
const standIn = (path: string): string => join(secretStandIns, path.split('/').at(-1) as string)

const docs = new Map<string, Raw>()
for (const b of brokers) {
  const m = mountAt(b, '/etc/mqtt-bastion/bastion.yaml')
  if (m !== undefined) docs.set(b, parseYaml(readFileSync(join(DOCKER, m.source), 'utf8')) as Raw)
}
/** Our own parser on a broker's config, the secret paths (only inside the container) pointing at stand-in files. */
function load (b: string): ReturnType<typeof parseConfig> {
  const doc = docs.get(b) as Raw
  return parseConfig({
    ...doc,
    auth: { ...doc.auth, store: { ...doc.auth.store, passwordFile: standIn(doc.auth.store.passwordFile) } },
    cluster: { ...doc.cluster, redis: { ...doc.cluster.redis, passwordFile: standIn(doc.cluster.redis.passwordFile) } }
  }, '/etc/mqtt-bastion', { env: {} })
}

t.test('two brokers from the repository\'s Dockerfile, hardened as in docker/compose.yaml', async (t) => {
  t.same(Object.keys(services).sort(), ['broker-1', 'broker-2', 'db', 'haproxy', 'redis'])
  t.same(brokers, ['broker-1', 'broker-2'])
  const single = (parseYaml(read('docker/compose.yaml')) as Raw).services.broker as Raw
  for (const b of brokers) {
    const s = services[b] as Raw
    t.same(s.build, single.build, `${b}: built like the single-node broker`)
    t.equal(resolve(DOCKER, s.build.context), ROOT, `${b}: context is the repository root`)
    t.ok(existsSync(join(DOCKER, s.build.context, s.build.dockerfile)), `${b}: the Dockerfile exists`)
    t.equal(s.image, single.image)
    t.equal(s.user, '1000:1000', `${b}: uid 1000, the image's user`)
    t.equal(s.read_only, true)
    t.same(s.tmpfs, ['/tmp'])
    t.same(s.cap_drop, ['ALL'])
    t.same(s.security_opt, ['no-new-privileges:true'])
    t.equal(s.ports, undefined, `${b}: publishes nothing, devices come through haproxy`)
    t.same(s.depends_on, { db: { condition: 'service_healthy' }, redis: { condition: 'service_healthy' } })
    t.same(s.secrets, ['db_password', 'redis_password'])
    t.same(mountAt(b, '/etc/mqtt-bastion/bastion.yaml'), { source: `./cluster/${b}.yaml`, target: '/etc/mqtt-bastion/bastion.yaml', readOnly: true }, `${b}: its own config, read-only`)
    t.match(mountAt(b, '/etc/mqtt-bastion/certs'), { source: 'certs' }, `${b}: the shared certificate volume`)
  }
  for (const [name, s] of Object.entries(services)) {
    if (name !== 'haproxy') t.equal(s.ports, undefined, `${name} publishes nothing`)
    t.not(s.network_mode, 'host', `${name} is not on the host network`)
    for (const m of ((s.volumes ?? []) as unknown[]).map(mount)) {
      if (/^[./~]/.test(m.source)) t.ok(existsSync(join(DOCKER, m.source)), `${name}: bind source ${m.source} exists`)
      else t.ok(Object.keys(compose.volumes ?? {}).includes(m.source), `${name}: volume ${m.source} is declared`)
    }
  }
  t.same(services.haproxy?.ports, ['8883:8883'], 'only the front publishes, only 8883')
})

t.test('every broker config the compose file mounts passes our own parser', async (t) => {
  t.equal(docs.size, brokers.length, 'each broker mounts a config')
  for (const b of brokers) {
    const c = load(b)
    t.match(c.listeners, [{ type: 'tls', host: '0.0.0.0', port: 8883, cert: '/etc/mqtt-bastion/certs/server.crt', key: '/etc/mqtt-bastion/certs/server.key' }], `${b}: one tls listener`)
    t.equal(c.listeners.length, 1)
    t.same(c.monitoring, { enabled: true, host: '127.0.0.1', port: 9464 }, `${b}: the listener the image's HEALTHCHECK asks`)
    t.equal((c.auth.store as Raw).password, STAND_IN['/run/secrets/db_password'], `${b}: the MySQL password is read from the secret file`)
    t.equal(c.cluster?.redis.password, STAND_IN['/run/secrets/redis_password'], `${b}: the Redis password is read from the secret file`)
  }
  // Apart from the node id the two configs are one.
  const strip = (d: Raw): Raw => ({ ...d, cluster: { ...d.cluster, nodeId: undefined } })
  t.same(strip(docs.get('broker-1') as Raw), strip(docs.get('broker-2') as Raw), 'the configs differ only in cluster.nodeId')
})

t.test('two node ids, one Redis service, one MariaDB service', async (t) => {
  const ids = brokers.map((b) => load(b).cluster?.nodeId)
  t.same(ids, ['broker-1', 'broker-2'])
  t.equal(new Set(ids).size, brokers.length, 'different cluster.nodeId on each broker')
  const db = services.db as Raw
  t.equal(db.image, 'mariadb:11')
  t.equal((services.redis as Raw).image, 'redis:7')
  for (const b of brokers) {
    const c = load(b)
    t.match(c.cluster?.redis, { host: 'redis', port: 6379, keyPrefix: 'bastion:', db: 0 }, `${b}: the redis service`)
    t.match(c.auth.store, { type: 'mysql', host: 'db', port: 3306, user: db.environment.MARIADB_USER, database: db.environment.MARIADB_DATABASE }, `${b}: the MySQL store on the mariadb service`)
    // A name resolves on the networks the two containers share.
    for (const peer of ['redis', 'db']) {
      t.ok(networksOf(services[b] as Raw).some((n) => networksOf(services[peer] as Raw).includes(n)), `${b} shares a network with ${peer}`)
    }
  }
  const redisConf = read('docker/cluster/redis.conf')
  t.match(redisConf, /^appendonly yes$/m, 'Redis keeps an append-only file: owners and lockouts survive a restart')
  t.match(redisConf, /^maxmemory-policy noeviction$/m, 'Redis never evicts security state')
  t.match(redisConf, /^port 6379$/m)
  t.same(mountAt('redis', '/usr/local/etc/redis/redis.conf'), { source: './cluster/redis.conf', target: '/usr/local/etc/redis/redis.conf', readOnly: true })
  t.match(mountAt('redis', '/data'), { source: 'redis' }, 'the append-only file is in a named volume')
  t.equal((compose.networks as Raw).back.internal, true, 'Redis and MariaDB sit on an internal network')
  t.same(networksOf(services.redis as Raw), ['back'])
  t.same(networksOf(services.db as Raw), ['back'])
})

t.test('the brokers trust exactly the haproxy service\'s fixed address for PROXY protocol', async (t) => {
  const h = services.haproxy as Raw
  t.same(Object.keys(h.networks), ['front'], 'haproxy is on one network: its source address is that one')
  const address = h.networks.front.ipv4_address as string
  const subnet = (compose.networks as Raw).front.ipam.config[0].subnet as string
  const [net = '', bits = '32'] = subnet.split('/')
  const toInt = (a: string): number => a.split('.').reduce((n, o) => n * 256 + Number(o), 0)
  const mask = Number(bits) === 0 ? 0 : (0xffffffff << (32 - Number(bits))) >>> 0
  t.equal((toInt(address) & mask) >>> 0, (toInt(net) & mask) >>> 0, `${address} lies in the front subnet ${subnet}`)
  for (const b of brokers) {
    t.ok(networksOf(services[b] as Raw).includes('front'), `${b} is on the front network`)
    t.same(docs.get(b)?.listeners[0].proxyProtocol, { trusted: [address] }, `${b}: trusts haproxy's address and nothing else`)
    t.same((load(b).listeners[0] as Raw | undefined)?.proxyProtocol, { trusted: [`${address}/32`] })
  }
})

// --- haproxy.cfg --------------------------------------------------------------------------------
const HAPROXY = '/usr/sbin/haproxy'
const cfgMount = mountAt('haproxy', '/usr/local/etc/haproxy/haproxy.cfg')
const haproxyCfg = read('docker/haproxy/haproxy.cfg')
const check = (file: string): { status: number | null; out: string } => {
  const r = spawnSync(HAPROXY, ['-c', '-f', file], { encoding: 'utf8', timeout: 30_000 })
  if (r.error !== undefined) throw r.error
  return { status: r.status, out: `${r.stdout}${r.stderr}` }
}
/**
 * The config with the broker names replaced by 127.0.0.1, the one change `haproxy -c` needs to
 * pass without warnings here: outside Docker `broker-1` resolves nowhere (init-addr's `none`
 * still lets the file pass, with a "could not resolve" warning per server). Docker's DNS
 * (127.0.0.11, the `resolvers` section) is not asked by `-c`.
 */
const localized = (text: string, ports?: Record<string, string>): string =>
  text.replace(/^(\s*server\s+\S+\s+)(broker-\d+):(\d+)/gm, (_m, head: string, _host: string, port: string) => `${head}127.0.0.1:${port}`)
    .replace(/^(\s*bind\s+)(\S+)/gm, (m, head: string, addr: string) => ports?.[addr] === undefined ? m : `${head}${ports[addr]}`)

t.test('haproxy.cfg: mounted read-only, leastconn over both brokers with PROXY v2 and health checks', async (t) => {
  t.same(cfgMount, { source: './haproxy/haproxy.cfg', target: '/usr/local/etc/haproxy/haproxy.cfg', readOnly: true }, 'the official image\'s config path')
  const h = services.haproxy as Raw
  t.equal(h.image, 'haproxy:2.6')
  t.equal(h.read_only, true)
  t.same(h.cap_drop, ['ALL'])
  t.same(h.security_opt, ['no-new-privileges:true'])
  t.not(h.user, undefined)
  t.not(String(h.user).split(':')[0], '0', 'not root')
  t.same(h.depends_on, Object.fromEntries(brokers.map((b) => [b, { condition: 'service_healthy' }])))
  const lines = haproxyCfg.split('\n').map((l) => l.replace(/#.*/, '').trim()).filter((l) => l !== '')
  const servers = lines.filter((l) => l.startsWith('server ')).map((l) => l.split(/\s+/))
  t.same(servers.map((s) => s[2]), brokers.map((b) => `${b}:${load(b).listeners[0]?.port}`), 'one server per broker service, at its listener port')
  const defaults = lines.find((l) => l.startsWith('default-server '))?.split(/\s+/) ?? []
  for (const opt of ['send-proxy-v2', 'check', 'check-send-proxy', 'on-marked-down']) t.ok(defaults.includes(opt), `default-server ${opt}`)
  t.notOk(defaults.includes('send-proxy'), 'v2, not v1')
  t.ok(lines.includes('balance leastconn'))
  t.ok(lines.includes('mode tcp'), 'TCP: TLS passes through to the brokers')
  t.notOk(/\bssl\b|\bcrt\b/.test(lines.join('\n')), 'no TLS termination at the front')
  t.ok(lines.includes('bind :8883'), 'the front listens where compose publishes')
})

t.test('haproxy -c accepts haproxy.cfg (Debian haproxy 2.6, the image\'s branch)', async (t) => {
  t.ok(existsSync(HAPROXY), `${HAPROXY} is installed (scripts/install-test-deps.sh)`)
  const asIs = check(join(DOCKER, 'haproxy/haproxy.cfg'))
  t.equal(asIs.status, 0, `the file as it is: valid (${asIs.out.trim()})`)
  const warnings = asIs.out.split('\n').filter((l) => l.includes('[WARNING]'))
  t.same(warnings.filter((l) => !/could not resolve address 'broker-\d+'/.test(l)), [], 'its only warnings: the broker names do not resolve outside Docker')
  const copy = join(scratchDir(), 'haproxy.cfg')
  writeFileSync(copy, localized(haproxyCfg))
  const local = check(copy)
  t.equal(local.status, 0, 'valid with the broker names replaced by 127.0.0.1')
  t.notMatch(local.out, /WARNING|ALERT/, `and without any warning (${local.out.trim()})`)
})

t.test('haproxy.cfg running: checks open with a PROXY v2 LOCAL header and the compose healthcheck passes', async (t) => {
  // A stand-in broker that records the first bytes of each connection (the health checks).
  const heads: Buffer[] = []
  const sockets = new Set<Socket>()
  const node = createServer((s) => { sockets.add(s); s.once('data', (d) => { heads.push(d); s.destroy() }); s.on('close', () => sockets.delete(s)) })
  await new Promise<void>((r) => node.listen(0, '127.0.0.1', r))
  const nodePort = (node.address() as { port: number }).port
  t.teardown(async () => { for (const s of sockets) s.destroy(); await new Promise((r) => node.close(r)) })
  const [front, health] = [await freePort(), await freePort()]
  const text = localized(haproxyCfg, { ':8883': `127.0.0.1:${front}`, '127.0.0.1:8404': `127.0.0.1:${health}` })
    .replace(/127\.0\.0\.1:8883/g, `127.0.0.1:${nodePort}`)
    // maxconn 20000 needs ~40000 descriptors (the compose file raises nofile); this machine's
    // limit may be lower, and haproxy refuses to start below it.
    .replace(/^(\s*maxconn\s+)\d+/m, '$1256')
    // The resolvers section asks Docker's DNS, absent here: harmless, the servers are addresses.
  const cfg = join(scratchDir(), 'haproxy.cfg')
  writeFileSync(cfg, text)
  let stderr = ''
  const haproxy: ChildProcess = spawn(HAPROXY, ['-f', cfg, '-db'], { stdio: ['ignore', 'ignore', 'pipe'] })
  haproxy.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-4000) })
  const exited = new Promise((resolve) => haproxy.once('exit', resolve))
  t.teardown(async () => {
    haproxy.kill('SIGTERM')
    await Promise.race([exited, sleep(3000).then(() => haproxy.kill('SIGKILL'))])
  })
  await accepting(health, 10_000, 'haproxy').catch((err: Error) => { throw new Error(`${err.message}: ${stderr}`) })
  // The first check of each server comes within `inter` (5 s).
  const deadline = Date.now() + 12_000
  while (heads.length < 2 && Date.now() < deadline) await sleep(100)
  t.ok(heads.length >= 2, `both servers were checked (${heads.length})`)
  const SIG = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')
  for (const h of heads.slice(0, 2)) {
    t.same(h.subarray(0, 12), SIG, 'a PROXY v2 signature')
    t.equal(h[12], 0x20, 'version 2, command LOCAL: the broker serves it as the proxy\'s own')
  }
  // The service's healthcheck, as Docker runs it (bash, $$ unescaped), on the test's port.
  const hc = ((services.haproxy as Raw).healthcheck.test as string[]).map(unescape)
  t.equal(hc[0], 'CMD')
  const argv = hc.slice(1).map((a) => a.replace('/dev/tcp/127.0.0.1/8404', `/dev/tcp/127.0.0.1/${health}`))
  t.equal(spawnSync(argv[0] as string, argv.slice(1), { timeout: 10_000 }).status, 0, 'healthy while a broker is up (200)')
  node.close()
  for (const s of sockets) s.destroy()
})

// --- redis: the exact command and healthcheck of the service ---------------------------------
t.test('the redis command takes its password from the secret on stdin, with appendonly and noeviction', async (t) => {
  const REDIS = ['/usr/bin/redis-server', 'redis-server'].find((p) => spawnSync(p, ['--version']).error === undefined)
  t.ok(REDIS, 'redis-server is installed (scripts/install-test-deps.sh)')
  const s = services.redis as Raw
  t.same(s.secrets, ['redis_password'])
  t.equal(s.user, '999:999')
  t.equal(s.read_only, true)
  t.same(s.cap_drop, ['ALL'])
  t.same(s.security_opt, ['no-new-privileges:true'])
  const command = (s.command as string[]).map(unescape)
  t.same(command.slice(0, 2), ['sh', '-c'])
  const script = command[2] as string
  t.match(script, /^exec redis-server \/usr\/local\/etc\/redis\/redis\.conf - <<EOF\n/, 'exec: redis-server is PID 1 and gets docker stop\'s SIGTERM')
  const dir = scratchDir()
  const port = await freePort()
  const password = 'a1b2c3d4e5f60718293a4b5c6d7e8f90'
  writeFileSync(join(dir, 'redis_password'), password + '\n', { mode: 0o600 })
  // The mounted file with only `dir` and `port` moved into the test's folder (Redis changes to
  // `dir` while reading it, so /data cannot stay) and the listener kept on loopback.
  writeFileSync(join(dir, 'redis.conf'), read('docker/cluster/redis.conf')
    .replace(/^dir .*$/m, `dir ${dir}`).replace(/^port 6379$/m, `port ${port}\nbind 127.0.0.1`))
  const local = (x: string): string => x.replace('/usr/local/etc/redis/redis.conf', join(dir, 'redis.conf'))
    .replace('/run/secrets/redis_password', join(dir, 'redis_password')).replace(/^exec redis-server /, `exec ${REDIS ?? 'redis-server'} `)
  const redis = spawn('sh', ['-c', local(script)], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  redis.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise((resolve) => redis.once('exit', resolve))
  t.teardown(async () => {
    redis.kill('SIGTERM')
    await Promise.race([exited, sleep(3000).then(() => redis.kill('SIGKILL'))])
  })
  await accepting(port, 10_000, 'redis-server').catch((err: Error) => { throw new Error(`${err.message}: ${stderr}`) })
  const cli = (args: string[], auth?: string): string => spawnSync('redis-cli', ['-p', String(port), ...args], {
    encoding: 'utf8', timeout: 10_000, env: { ...process.env, ...(auth === undefined ? {} : { REDISCLI_AUTH: auth }) }
  }).stdout.trim()
  t.match(cli(['ping']), /NOAUTH/, 'no command without the password')
  t.equal(cli(['ping'], password), 'PONG', 'the secret\'s first line is the password')
  t.equal(cli(['config', 'get', 'appendonly'], password), 'appendonly\nyes')
  t.equal(cli(['config', 'get', 'maxmemory-policy'], password), 'maxmemory-policy\nnoeviction')
  const cmdline = readFileSync(`/proc/${redis.pid}/cmdline`, 'utf8')
  t.match(cmdline, /redis-server/, 'sh exec\'d redis-server in its own process')
  t.notMatch(cmdline, password, 'the password is not on the command line')
  // The service's healthcheck, as Docker runs it (CMD-SHELL: sh -c), on the test's port.
  const [kind, shell] = (s.healthcheck.test as string[]).map(unescape)
  t.equal(kind, 'CMD-SHELL')
  const hc = spawnSync('sh', ['-c', local(shell as string).replace('redis-cli ping', `redis-cli -p ${port} ping`)], { timeout: 10_000 })
  t.equal(hc.status, 0, 'the healthcheck passes with the secret')
  const noSecret = spawnSync('sh', ['-c', (shell as string).replace('/run/secrets/redis_password', join(dir, 'absent')).replace('redis-cli ping', `redis-cli -p ${port} ping`)], { timeout: 10_000 })
  t.not(noSecret.status, 0, 'and fails without it (NOAUTH is not PONG)')
})

// --- secrets ------------------------------------------------------------------------------------
t.test('no password in the compose file or the files it mounts: secret files only', async (t) => {
  t.same(compose.secrets, { db_password: { file: './secrets/db_password.txt' }, redis_password: { file: './secrets/redis_password.txt' } })
  t.match(read('docker/secrets/.gitignore'), /^\*$/m, 'git ignores the secrets folder')
  for (const [name, s] of Object.entries(services)) {
    t.equal(s.env_file, undefined, `${name}: no env file`)
    for (const [key, value] of Object.entries(s.environment ?? {})) {
      if (/PASS|SECRET|AUTH|TOKEN/i.test(key)) t.ok(key.endsWith('_FILE') || (key === 'MARIADB_RANDOM_ROOT_PASSWORD' && value === '1'), `${name}: ${key} is not a password value`)
    }
    const cmd = ([] as string[]).concat(s.command ?? [], s.healthcheck?.test ?? []).join('\n')
    t.notMatch(cmd, /--requirepass|-a\s|--pass\b|--user\s/, `${name}: no password option on a command line`)
    for (const m of cmd.matchAll(/(requirepass|REDISCLI_AUTH=)\s*("?)(.*)/g)) {
      t.match(m[3], /^\$\$\(cat \/run\/secrets\/redis_password\)/, `${name}: ${m[1]} comes from the secret`)
    }
  }
  t.same(services.db?.environment.MARIADB_PASSWORD_FILE, '/run/secrets/db_password')
  for (const b of brokers) {
    const doc = docs.get(b) as Raw
    t.same([doc.auth.store.password, doc.auth.store.passwordEnv, doc.cluster.redis.password, doc.cluster.redis.passwordEnv], [undefined, undefined, undefined, undefined], `${b}: no inline or environment password`)
    t.same([doc.auth.store.passwordFile, doc.cluster.redis.passwordFile], ['/run/secrets/db_password', '/run/secrets/redis_password'])
  }
  t.notMatch(read('docker/cluster/redis.conf'), /^\s*(requirepass|masterauth|user)\s/m, 'redis.conf holds no password')
  t.notMatch(haproxyCfg, /userlist|password|stats auth/i, 'haproxy.cfg holds no credentials')
})

// --- the guide's own snippets (docs/cluster.md, "Running a cluster") --------------------------
const guide = /\n## Running a cluster\n([\s\S]*?)\n## /.exec(read('docs/cluster.md'))?.[1] ?? ''
const block = (lang: string): string => new RegExp('```' + lang + '\\n([\\s\\S]*?)\\n```').exec(guide)?.[1] ?? ''

t.test('the guide\'s bastion.yaml, HAProxy and NGINX configs are accepted by the broker, haproxy -c and nginx -t', async (t) => {
  t.not(guide, '', 'docs/cluster.md has the section')
  // The node's config, its two password files stand-ins beside it (paths relative to its folder).
  const dir = scratchDir()
  writeFileSync(join(dir, 'db_password'), 'x\n', { mode: 0o600 })
  writeFileSync(join(dir, 'redis_password'), 'y\n', { mode: 0o600 })
  const c = parseConfig(parseYaml(block('yaml')), dir, { env: {} })
  t.match(c, { auth: { store: { type: 'mysql', password: 'x' } }, cluster: { nodeId: 'node1', redis: { host: '10.0.0.4', password: 'y' } } })
  t.same((c.listeners[0] as Raw | undefined)?.proxyProtocol, { trusted: ['10.0.0.5/32'] }, 'the front only')

  const ha = join(dir, 'haproxy.cfg')
  writeFileSync(ha, block('haproxy') + '\n')
  t.match(block('haproxy'), /balance leastconn/)
  t.match(block('haproxy'), /send-proxy-v2 check check-send-proxy/)
  const r = check(ha)
  t.equal(r.status, 0, `haproxy -c: valid (${r.out.trim()})`)
  t.notMatch(r.out, /WARNING|ALERT/, 'without warnings')

  const nginxBlock = block('nginx')
  t.match(nginxBlock, /least_conn;/)
  t.match(nginxBlock, /proxy_protocol on;/)
  // scripts/install-test-deps.sh installs nginx-light and libnginx-mod-stream: a missing nginx is a failure.
  t.equal(spawnSync('nginx', ['-v']).error, undefined, 'nginx is installed (apt-get install nginx-light libnginx-mod-stream)')
  // Debian loads the stream module from modules-enabled (libnginx-mod-stream); the snippet goes
  // at the top level of nginx.conf, which needs an events block besides.
  const enabled = existsSync('/etc/nginx/modules-enabled/50-mod-stream.conf')
  const loader = enabled ? 'include /etc/nginx/modules-enabled/*.conf;' : 'load_module /usr/lib/nginx/modules/ngx_stream_module.so;'
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, `${loader}\npid ${join(dir, 'nginx.pid')};\nevents {}\n${nginxBlock}\n`)
  const n = spawnSync('nginx', ['-t', '-c', conf, '-e', 'stderr'], { encoding: 'utf8', timeout: 30_000 })
  t.equal(n.status, 0, `nginx -t: ${n.stderr.trim()}`)
})
