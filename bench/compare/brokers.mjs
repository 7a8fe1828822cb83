// The brokers under test, each its own process pinned to one core: Debian's mosquitto and ours
// through the built CLI (`node dist/cli/main.js start`), so whatever `npm run build` last
// produced is what runs. setupFiles() writes everything they share once per run (certificate,
// Mosquitto password and ACL files, our SQLite users); each broker kind then knows how to start
// and which credentials its clients log in with. One kind is a pair of processes: ours behind
// HAProxy (HAProxy terminates TLS and forwards with PROXY v2), both pinned to the one core and
// measured together (processes.mjs: cpuSeconds / rssKiB / runqWaitSeconds sum over a handle's processes).
import { execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import bcrypt from 'bcryptjs'
import { generateSecret, generateSync } from 'otplib'
import { freePort } from './processes.mjs'

// Node options for our broker processes only, e.g. a CPU profile of each run:
// BENCH_COMPARE_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'
const NODE_ARGS = (process.env.BENCH_COMPARE_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const CLI = join(ROOT, 'dist', 'cli', 'main.js')
const FLOOR = fileURLToPath(new URL('floor.mjs', import.meta.url))
export const PAIRS = 8 // 8 publishers -> 8 subscribers, publisher i to subscriber i
const MOSQ_DEVICES = 16 // idle and connect scenarios cycle through these Mosquitto-file users
const PASSWORD = 'bench-password-1'

// ---- files shared by the brokers -----------------------------------------------------------

/**
 * Creates, under `dir`: certs/ (our CLI's CA + ECDSA P-256 server certificate), the Mosquitto
 * password file (mosquitto_passwd: PBKDF2-SHA512, `$7$`) and ACL file, the allow-all ACL, and
 * our SQLite users for every repetition (CLI `user import`, precomputed bcrypt hashes).
 */
export function setupFiles (dir, { reps, idle, connects, cold, baseline }) {
  execFileSync(process.execPath, [CLI, 'certs', 'init', '--out', join(dir, 'certs')], { stdio: 'pipe' })

  // mosquitto_passwd -U hashes a file of user:password lines in place, all with PBKDF2-SHA512.
  const names = [...range(PAIRS).flatMap((i) => [`pub${i}`, `sub${i}`]), ...range(MOSQ_DEVICES).map((i) => `dev${i}`)]
  const passwd = join(dir, 'passwd')
  writeFileSync(passwd, names.map((n) => `${n}:${PASSWORD}\n`).join(''), { mode: 0o600 })
  execFileSync('mosquitto_passwd', ['-U', passwd])
  chmodSync(passwd, 0o600)
  // Each publisher writes its own branch; its subscriber may read it; devices only their own.
  const acl = [
    ...range(PAIRS).flatMap((i) => [`user pub${i}`, `topic write metrics/pub${i}/#`, `user sub${i}`, `topic read metrics/pub${i}/#`]),
    ...range(MOSQ_DEVICES).flatMap((i) => [`user dev${i}`, `topic readwrite metrics/dev${i}/#`])
  ]
  writeFileSync(join(dir, 'acl'), acl.join('\n') + '\n')
  writeFileSync(join(dir, 'acl-allow-all'), 'pattern readwrite #\n')

  // Our "full" users: sqlite store, user|TOTP + bcrypt. A TOTP code is claimed once per user and
  // step, so every login in a repetition gets a user of its own (see fullCreds). The bcrypt cost
  // is 12 (the CLI's) where the bench measures logins cold; elsewhere 4, because those logins
  // are not what is measured and 3000 cost-12 logins would take ~15 minutes on one core.
  const hash12 = bcrypt.hashSync(PASSWORD, 12)
  const hash4 = bcrypt.hashSync(PASSWORD, 4)
  const secrets = new Map()
  const lines = []
  const add = (username, passwordHash) => {
    const totpSecret = generateSecret()
    secrets.set(username, totpSecret)
    lines.push(JSON.stringify({ username, passwordHash, totpSecret }))
  }
  for (let r = 1; r <= reps; r++) {
    for (const i of range(PAIRS)) add(`r${r}t${i}`, hash4)
    for (const i of range(idle)) add(`r${r}i${i}`, hash4)
    for (const i of range(connects)) add(`r${r}c${i}`, hash4)
    for (const i of range(cold)) add(`r${r}k${i}`, hash12)
  }
  writeFileSync(join(dir, 'users.jsonl'), lines.join('\n') + '\n', { mode: 0o600 })
  // The same users in one store per kind: "full", "full behind HAProxy" and the baseline build
  // each claim every code once.
  for (const folder of ['full', 'haproxy', ...(baseline === undefined ? [] : ['base'])]) {
    const fullDir = join(dir, folder)
    mkdirSync(fullDir, { mode: 0o700 })
    writeOurConfig(fullDir, 0, {}) // the CLI needs the config to find data/users.db
    execFileSync(process.execPath, [CLI, 'user', 'import', join(dir, 'users.jsonl'), '--config', join(fullDir, 'bastion.json')], { stdio: 'pipe' })
  }
  return { dir, secrets, ca: readFileSync(join(dir, 'certs', 'ca.crt'), 'utf8') }
}

function range (n) { return Array.from({ length: n }, (_, i) => i) }

/**
 * Our config (JSON is YAML). Limits raised only where the bench's load would trip them. `extra`
 * may replace `listeners` (ours behind HAProxy).
 */
function writeOurConfig (folder, port, extra) {
  const config = {
    listeners: [{ type: 'tls', host: '127.0.0.1', port, cert: '../certs/server.crt', key: '../certs/server.key', minVersion: 'TLSv1.3' }],
    limits: {
      maxConnections: 1_000_000, // idle-memory scenario: thousands of sockets from one address
      maxConnectionsPerIp: 0,
      publishRate: { messages: 1_000_000, bytes: 1_073_741_824 } // the schema's maxima: the load is not cut off
    },
    log: { level: 'info' }, // as shipped: one line per login, as Mosquitto logs each connection
    ...extra
  }
  writeFileSync(join(folder, 'bastion.json'), JSON.stringify(config, null, 2) + '\n')
  return join(folder, 'bastion.json')
}

// ---- the broker kinds ------------------------------------------------------------------------

/**
 * Each kind: key, label, start(port) -> { command, args, ready } and the credentials of its
 * clients. Credentials are made just before use: TOTP codes depend on the clock.
 */
export function brokerKinds (files, { baseline } = {}) {
  const mosqCreds = {
    pairs: (rep) => range(PAIRS).map((i) => ({
      pubCred: { clientId: `r${rep}-pub${i}`, username: `pub${i}`, password: PASSWORD },
      subCred: { clientId: `r${rep}-sub${i}`, username: `sub${i}`, password: PASSWORD },
      topic: `metrics/pub${i}/Temperatura`,
      filter: `metrics/pub${i}/#`
    })),
    idle: (rep, n) => range(n).map((i) => ({ clientId: `r${rep}-idle${i}`, username: `dev${i % MOSQ_DEVICES}`, password: PASSWORD })),
    connects: (rep, n, tag = 'c') => range(n).map((i) => ({ clientId: `r${rep}-${tag}${i}`, username: `dev${i % MOSQ_DEVICES}`, password: PASSWORD }))
  }
  // The password-file setup.
  const ourPasswdStart = (key, port, aclFile) => {
    const folder = join(files.dir, `ours-${key}`)
    mkdirSync(folder, { recursive: true, mode: 0o700 })
    copyFileSync(join(files.dir, 'passwd'), join(folder, 'passwd'))
    chmodSync(join(folder, 'passwd'), 0o600) // we refuse a password file others can read
    const config = writeOurConfig(folder, port, {
      auth: { store: { type: 'mosquitto-passwd', path: 'passwd' } },
      acl: { policy: 'mosquitto-acl', file: join(files.dir, aclFile) }
    })
    return { command: process.execPath, args: [...NODE_ARGS, CLI, 'start', '--config', config], ready: /"event":"broker\.ready"/ }
  }
  // The full setup (the default SQLite store, user|TOTP + bcrypt, the metrics policy) started by
  // the CLI `cli`; its users are in the folder named `key` (setupFiles). `extra` as writeOurConfig's.
  const ourFullStart = (key, port, cli, extra = {}) => {
    const config = writeOurConfig(join(files.dir, key), port, extra)
    return { command: process.execPath, args: [...NODE_ARGS, cli, 'start', '--config', config], ready: /"event":"broker\.ready"/ }
  }
  const ourFullKind = (key, label, cli) => ({
    key, label, ours: true, codeLogins: true,
    creds: fullCreds(files.secrets),
    start: (port) => ourFullStart(key, port, cli)
  })
  const ourPasswdKind = (key, label, aclFile) => ({
    key, label, ours: true,
    creds: mosqCreds,
    start: (port) => ourPasswdStart(key, port, aclFile)
  })
  return {
    mosquitto: {
      key: 'mosquitto', label: `Mosquitto ${mosquittoVersion()}`, ours: false,
      creds: mosqCreds,
      start (port) {
        const folder = join(files.dir, 'mosquitto')
        mkdirSync(folder, { recursive: true })
        const conf = join(folder, 'mosquitto.conf')
        writeFileSync(conf, [
          `listener ${port} 127.0.0.1`,
          `certfile ${join(files.dir, 'certs', 'server.crt')}`,
          `keyfile ${join(files.dir, 'certs', 'server.key')}`,
          'tls_version tlsv1.3',
          'allow_anonymous false',
          `password_file ${join(files.dir, 'passwd')}`,
          `acl_file ${join(files.dir, 'acl')}`,
          'persistence false',
          'log_dest stderr', // unbuffered (stdout to a file is block-buffered); default log types: a few lines per connection, as ours at info
          ...(process.getuid?.() === 0 ? ['user root'] : []) // else, as root, it switches to user mosquitto and cannot read the files
        ].join('\n') + '\n')
        return { command: '/usr/sbin/mosquitto', args: ['-c', conf], ready: / running$/m }
      }
    },
    // The floor (floor.mjs): Node's TLS server relaying the bench's packets with no MQTT engine.
    // Any credentials log in; what it costs is what every broker on node:tls costs at least.
    floor: {
      key: 'floor', label: `floor: node:tls relay, Node ${process.version}`, ours: false, node: true,
      creds: mosqCreds,
      start: (port) => ({
        command: process.execPath,
        args: [...NODE_ARGS, FLOOR, String(port), join(files.dir, 'certs', 'server.crt'), join(files.dir, 'certs', 'server.key')],
        ready: /^floor ready on \d+$/m
      })
    },
    passwd: ourPasswdKind('passwd', 'ours, Mosquitto password file', 'acl'),
    full: ourFullKind('full', 'ours, full', CLI),
    // The full setup run by another build (`--baseline DIR`: a checkout with dist/ built and
    // node_modules installed), interleaved with this one: a change measured against main in
    // one run, where the drift of a shared machine hits both alike.
    ...(baseline === undefined ? {} : { base: ourFullKind('base', `ours, full, baseline ${baseline}`, join(baseline, 'dist', 'cli', 'main.js')) }),
    // Not a real allow-all: the library API takes no custom AclPolicy (BastionOptions has only
    // `logger`), so this is the cheapest policy the config offers, one Mosquitto `pattern`
    // line matching every topic, with the password-file logins of the column above.
    allow: ourPasswdKind('allow', 'ours, allow-all ACL file', 'acl-allow-all'),
    // Ours behind HAProxy: HAProxy (C, OpenSSL) terminates TLS 1.3 on `port` and forwards each
    // connection with a PROXY v2 header to our plain tcp listener, which trusts 127.0.0.1 and is
    // our only listener; ours does MQTT only, with the full setup (its own copy of the users, so
    // the codes "full" claims do not refuse these logins). Both processes are pinned to the
    // broker's core.
    haproxy: {
      key: 'haproxy', label: `ours, full, behind HAProxy ${haproxyVersion()}`, ours: true,
      creds: fullCreds(files.secrets),
      async start (port) {
        const tcpPort = await freePort()
        const broker = ourFullStart('haproxy', port, CLI, {
          listeners: [{ type: 'tcp', host: '127.0.0.1', port: tcpPort, proxyProtocol: { trusted: ['127.0.0.1'] } }]
        })
        return { ...broker, companion: { name: 'haproxy', ...haproxyCommand(join(files.dir, 'haproxy-proxy'), port, tcpPort) } }
      }
    }
  }
}

// ---- HAProxy (the "haproxy" kind) ----------------------------------------------------------

/** HAProxy's binary, or undefined when it is not installed (/usr/sbin is not always on PATH). */
export function haproxyPath () {
  for (const p of ['/usr/sbin/haproxy', '/usr/local/sbin/haproxy']) if (existsSync(p)) return p
  try { execFileSync('haproxy', ['-v'], { stdio: 'ignore' }); return 'haproxy' } catch { return undefined }
}

function haproxyVersion () {
  const bin = haproxyPath()
  if (bin === undefined) return '(not installed)'
  try { return execFileSync(bin, ['-v'], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().match(/version (\d+\.\d+\.\d+)/)?.[1] ?? '?' } catch { return '?' }
}

/**
 * HAProxy's config and command line: TLS 1.3 on 127.0.0.1:`port` with our certificate, each
 * connection forwarded to 127.0.0.1:`tcpPort` with a PROXY v2 header. One thread (one core,
 * like the other brokers); maxconn from the soft FD limit it inherits (it needs ~2 FDs per
 * connection and refuses to start when it cannot get them); inactivity timeouts far beyond
 * any pause in the scenarios; no `log` line, so it logs only its own warnings and alerts.
 */
function haproxyCommand (folder, port, tcpPort) {
  mkdirSync(folder, { recursive: true, mode: 0o700 })
  const certs = join(folder, '..', 'certs')
  const crt = readFileSync(join(certs, 'server.crt'), 'utf8')
  const pem = join(folder, 'server.pem') // certificate then key, in one file
  writeFileSync(pem, crt + (crt.endsWith('\n') ? '' : '\n') + readFileSync(join(certs, 'server.key'), 'utf8'), { mode: 0o600 })
  const limit = softFdLimit()
  const maxconn = Math.max(256, Math.min(100_000, Math.floor((limit - 100) / 2)))
  const cfg = join(folder, 'haproxy.cfg')
  writeFileSync(cfg, [
    `# soft FD limit ${limit}: maxconn = (limit - 100) / 2`,
    'global',
    `    maxconn ${maxconn}`,
    '    nbthread 1',
    '',
    'defaults',
    '    mode tcp',
    `    maxconn ${maxconn}`,
    '    timeout connect 5s',
    '    timeout client 1h',
    '    timeout server 1h',
    '',
    'frontend mqtts',
    `    bind 127.0.0.1:${port} ssl crt ${pem} ssl-min-ver TLSv1.3`,
    '    default_backend bastion',
    '',
    'backend bastion',
    `    server s1 127.0.0.1:${tcpPort} send-proxy-v2`
  ].join('\n') + '\n')
  // -db: foreground, no fork (the pid taskset execs into is HAProxy's, and the only one).
  return { command: haproxyPath() ?? 'haproxy', args: ['-db', '-f', cfg], port }
}

function softFdLimit () {
  const out = execFileSync('sh', ['-c', 'ulimit -n']).toString().trim()
  return out === 'unlimited' ? 1_048_576 : Number(out)
}

/**
 * Our full setup's logins: `user|code` with the user's TOTP code for a chosen step. Each user
 * logs in once per step; a pair's subscriber is its publisher's user (the metrics policy lets a
 * user read only its own branch) with the next step's code, accepted now with window 1.
 */
function fullCreds (secrets) {
  const code = (user, step) => generateSync({ secret: secrets.get(user), epoch: step * 30 })
  const now = () => Math.floor(Date.now() / 30_000)
  const login = (user, clientId, step) => ({ clientId, username: `${user}|${code(user, step)}`, password: PASSWORD })
  return {
    pairs: (rep) => {
      const s = now()
      return range(PAIRS).map((i) => ({
        pubCred: login(`r${rep}t${i}`, `r${rep}t${i}-pub`, s),
        subCred: login(`r${rep}t${i}`, `r${rep}t${i}-sub`, s + 1),
        topic: `metrics/r${rep}t${i}/Temperatura`,
        filter: `metrics/r${rep}t${i}/#`
      }))
    },
    idle: (rep, n) => { const s = now(); return range(n).map((i) => login(`r${rep}i${i}`, `r${rep}i${i}`, s)) },
    // step: the warm-up logs in with `s`, the measured run with `s + 1` (see scenarios.mjs).
    connects: (rep, n, tag = 'c', step = now()) => range(n).map((i) => login(`r${rep}c${i}`, `r${rep}c${i}-${tag}`, step)),
    cold: (rep, n) => { const s = now(); return range(n).map((i) => login(`r${rep}k${i}`, `r${rep}k${i}`, s)) },
    step: now
  }
}

function mosquittoVersion () {
  try {
    return execFileSync('/usr/sbin/mosquitto', ['-h'], { stdio: ['ignore', 'pipe', 'pipe'] }).toString().match(/version (\S+)/)?.[1] ?? '?'
  } catch (err) {
    return String(err.stdout ?? '').match(/version (\S+)/)?.[1] ?? '?' // -h exits 3
  }
}
