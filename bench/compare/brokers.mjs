// The brokers under test, each its own process pinned to one core: Debian's mosquitto and ours
// through the built CLI (`node dist/cli/main.js start`), so whatever `npm run build` last
// produced is what runs. setupFiles() writes everything they share once per run (certificate,
// Mosquitto password and ACL files, our SQLite users); each broker kind then knows how to start
// and which credentials its clients log in with.
import { execFileSync, spawn } from 'node:child_process'
import { chmodSync, closeSync, copyFileSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import bcrypt from 'bcryptjs'
import { generateSecret, generateSync } from 'otplib'

// Node options for our broker processes only, e.g. a CPU profile of each run:
// BENCH_COMPARE_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof'
const NODE_ARGS = (process.env.BENCH_COMPARE_NODE_ARGS ?? '').split(' ').filter((a) => a !== '')
// Our brokers run with the malloc setting `npm start`, the systemd unit and the image give them
// (docs/deploy.md, "Memory"); BENCH_COMPARE_GLIBC_TUNABLES= (empty) runs them with glibc's defaults.
const OUR_ENV = { ...process.env, GLIBC_TUNABLES: process.env.BENCH_COMPARE_GLIBC_TUNABLES ?? 'glibc.malloc.mmap_threshold=65536' }

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const CLI = join(ROOT, 'dist', 'cli', 'main.js')
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100
export const PAIRS = 8 // 8 publishers -> 8 subscribers, publisher i to subscriber i
const MOSQ_DEVICES = 16 // idle and connect scenarios cycle through these Mosquitto-file users
const PASSWORD = 'bench-password-1'

// ---- files shared by the brokers -----------------------------------------------------------

/**
 * Creates, under `dir`: certs/ (our CLI's CA + ECDSA P-256 server certificate), the Mosquitto
 * password file (mosquitto_passwd: PBKDF2-SHA512, `$7$`) and ACL file, the allow-all ACL, and
 * our SQLite users for every repetition (CLI `user import`, precomputed bcrypt hashes).
 */
export function setupFiles (dir, { reps, idle, connects, cold }) {
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
  const fullDir = join(dir, 'full')
  mkdirSync(fullDir, { mode: 0o700 })
  writeOurConfig(fullDir, 0, {}) // the CLI needs the config to find data/users.db
  writeFileSync(join(dir, 'users.jsonl'), lines.join('\n') + '\n', { mode: 0o600 })
  execFileSync(process.execPath, [CLI, 'user', 'import', join(dir, 'users.jsonl'), '--config', join(fullDir, 'bastion.json')], { stdio: 'pipe' })
  return { dir, secrets, ca: readFileSync(join(dir, 'certs', 'ca.crt'), 'utf8') }
}

function range (n) { return Array.from({ length: n }, (_, i) => i) }

/** Our config (JSON is YAML). Limits raised only where the bench's load would trip them. */
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
export function brokerKinds (files) {
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
  const ourPasswdKind = (key, label, aclFile) => ({
    key, label, ours: true,
    creds: mosqCreds,
    start (port) {
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
    passwd: ourPasswdKind('passwd', 'ours, Mosquitto password file', 'acl'),
    full: {
      key: 'full', label: 'ours, full', ours: true,
      creds: fullCreds(files.secrets),
      start (port) {
        const config = writeOurConfig(join(files.dir, 'full'), port, {})
        return { command: process.execPath, args: [...NODE_ARGS, CLI, 'start', '--config', config], ready: /"event":"broker\.ready"/ }
      }
    },
    // Not a real allow-all: the library API takes no custom AclPolicy (BastionOptions has only
    // `logger`), so this is the cheapest policy the config offers, one Mosquitto `pattern`
    // line matching every topic, with the password-file logins of the column above.
    allow: ourPasswdKind('allow', 'ours, allow-all ACL file', 'acl-allow-all')
  }
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

// ---- running one ---------------------------------------------------------------------------

export function freePort () {
  return new Promise((resolve, reject) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)) })
    s.on('error', reject)
  })
}

const running = new Set() // for cleanup on SIGINT / errors

/**
 * Starts the broker pinned to `cpu` (taskset -c; unpinned when `cpu` is undefined), its stdout
 * and stderr to `logFile`; resolves once its ready line is logged.
 */
export async function startBroker (kind, { cpu, logFile }) {
  const port = await freePort()
  const { command, args, ready } = kind.start(port)
  const fd = openSync(logFile, 'w')
  const [cmd, argv] = cpu === undefined ? [command, args] : ['taskset', ['-c', String(cpu), command, ...args]]
  const child = spawn(cmd, argv, { stdio: ['ignore', fd, fd], env: kind.ours ? OUR_ENV : process.env }) // taskset execs: the pid is the broker's
  closeSync(fd)
  const handle = { kind, port, pid: child.pid, child, logFile, exited: null }
  handle.exited = new Promise((resolve) => child.once('exit', (code, signal) => { running.delete(handle); resolve({ code, signal }) }))
  running.add(handle)
  const deadline = Date.now() + 30_000
  for (;;) {
    const log = readFileSync(logFile, 'utf8')
    if (ready.test(log)) break
    if (!running.has(handle) || Date.now() > deadline) {
      await stopBroker(handle)
      throw new Error(`${kind.key} did not start:\n${log.slice(-2000)}`)
    }
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  return handle
}

/** SIGTERM, then SIGKILL after 10 s (ours drains for at most shutdown.drainTimeout = 5 s). */
export async function stopBroker (handle) {
  if (!running.has(handle)) return handle.exited
  handle.child.kill('SIGTERM')
  const timer = setTimeout(() => handle.child.kill('SIGKILL'), 10_000)
  const r = await handle.exited
  clearTimeout(timer)
  return r
}

/** Kills (by pid, only what this bench started) every broker still running: for exit paths. */
export function killAll () {
  for (const h of running) { try { h.child.kill('SIGKILL') } catch {} }
}

/**
 * Seconds the broker's main thread waited for a CPU while runnable (/proc/<pid>/schedstat):
 * when other work shares its core, this grows and the broker's CPU share drops below 100 %.
 */
export function brokerRunqWaitSeconds (pid) {
  try { return Number(readFileSync(`/proc/${pid}/schedstat`, 'utf8').split(' ')[1]) / 1e9 } catch { return NaN }
}

/** CPU seconds the broker process used so far, all threads (bcrypt workers included). */
export function brokerCpuSeconds (pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ') // fields from 3 (state) on
  return (Number(f[11]) + Number(f[12])) / CLK_TCK // utime + stime, fields 14 and 15
}

export function brokerRssKiB (pid) {
  return Number(readFileSync(`/proc/${pid}/status`, 'utf8').match(/^VmRSS:\s+(\d+)/m)[1])
}

/**
 * What the broker logged that a reader should see: our warn/error lines and limit events by
 * event name; Mosquitto's error/warning lines (first words). Logins and connects are counted.
 */
export function summariseLog (handle) {
  const text = readFileSync(handle.logFile, 'utf8')
  const notable = {}
  const bump = (k) => { notable[k] = (notable[k] ?? 0) + 1 }
  if (handle.kind.ours) {
    for (const line of text.split('\n')) {
      if (line === '') continue
      let o
      try { o = JSON.parse(line) } catch { bump('unparsed line'); continue }
      const ev = o.event ?? o.msg
      if (o.level >= 40 || /^limit\.|refused|failed|denied/.test(String(ev))) bump(`${ev} (level ${o.level})`)
    }
  } else {
    for (const line of text.split('\n')) {
      const m = line.match(/^\d+: (.*)$/)
      const msg = m?.[1] ?? line
      if (/error|warning|denied|refused|out of memory|dropped|exceeded/i.test(msg)) bump(msg.replace(/\d+/g, 'N').slice(0, 100))
    }
  }
  return notable
}
