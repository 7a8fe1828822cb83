// scripts/fail2ban against the broker's real log: the CLI's standard output written to a file
// as `mqtt-bastion start >>file` writes it, read by Debian's fail2ban-regex. The addresses
// fail2ban extracts are compared with each event's own "remote" (parsed as JSON).
import t from 'tap'
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { closeSync, cpSync, existsSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { basename, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import mqtt, { type IClientOptions } from 'mqtt'
import { pino } from 'pino'
import { currentCode } from '../../src/crypto/totp.js'

const run = promisify(execFile)
const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)))
const CLI = join(ROOT, 'dist', 'cli', 'main.js')
const FILTER = join(ROOT, 'scripts', 'fail2ban', 'filter.d', 'mqtt-bastion.conf')
const JAIL = join(ROOT, 'scripts', 'fail2ban', 'jail.d', 'mqtt-bastion.local')
const read = (p: string): string => readFileSync(join(ROOT, p), 'utf8')

// The refusals fail2ban counts (the filter's _guess) and those it must not; every LoginFailure
// has to be in one of the two lists, so a new reason cannot slip in unclassified.
const COUNTED = ['anonymous', 'malformed_username', 'invalid_username', 'missing_password', 'unknown_user', 'disabled_user',
  'bad_password', 'bad_otp', 'replayed_otp', 'backend_denied', 'totp_not_configured', 'no_certificate', 'certificate_mismatch']
const NOT_COUNTED = ['backend_unavailable', 'server_busy', 'locked_out', 'will_denied', 'clientid_rejected', 'clientid_taken',
  'clientid_binding', 'clientid_owned', 'keepalive_rejected']

type Event = Record<string, any>
const normalize = (remote: string): string => remote.replace(/^::ffff:(?=\d)/i, '').replace(/%.*$/, '')
/** What fail2ban must extract, in order: the event's own address, nothing else. */
const expectedBans = (events: Event[]): string[] => events
  .filter((e) => (e.event === 'login.failed' && COUNTED.includes(e.reason)) || e.event === 'auth.lockout')
  .map((e) => normalize(e.remote))

async function tool (cmd: string, args: string[]): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const r = await run(cmd, args, { timeout: 30000, maxBuffer: 16 * 1024 * 1024 })
    return { ...r, code: 0 }
  } catch (err: any) {
    return { stdout: err.stdout ?? '', stderr: err.stderr ?? String(err.message), code: typeof err.code === 'number' ? err.code : -1 }
  }
}

/** fail2ban-regex with `-o '<ip> <time>'`: one [address, epoch seconds] per matched line. */
async function extracted (logFile: string): Promise<Array<[string, number]>> {
  const r = await tool('fail2ban-regex', ['-o', '<ip> <time>', logFile, FILTER])
  if (r.code !== 0) throw new Error(`fail2ban-regex failed: ${r.stderr}`)
  return r.stdout.split('\n').filter((l) => l.trim() !== '').map((l) => {
    const [ip = '', time = ''] = l.trim().split(' ')
    return [ip, Number(time)]
  })
}

/** fail2ban-regex's summary: lines read, matched, and how many found their date. */
async function summary (logFile: string): Promise<{ lines: number; matched: number; dated: number; out: string }> {
  const r = await tool('fail2ban-regex', [logFile, FILTER])
  if (r.code !== 0) throw new Error(`fail2ban-regex failed: ${r.stderr}`)
  const m = /Lines: (\d+) lines, \d+ ignored, (\d+) matched/.exec(r.stdout)
  const hits = (/Date template hits:\n([\s\S]*?)\n`-/.exec(r.stdout)?.[1] ?? '').split('\n')
    .map((l) => Number(/\[(\d+)\]/.exec(l)?.[1] ?? 0)).reduce((a, b) => a + b, 0)
  return { lines: Number(m?.[1] ?? -1), matched: Number(m?.[2] ?? -1), dated: hits, out: r.stdout }
}

const haveFail2ban = spawnSync('fail2ban-regex', ['--version']).status === 0
if (!haveFail2ban) {
  t.fail('fail2ban-regex not found: run scripts/install-test-deps.sh as root (Debian package fail2ban)')
} else {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-f2b-'))
  const cfg = join(dir, 'bastion.yaml')
  const logFile = join(dir, 'mqtt-bastion.log')
  let broker: ChildProcess | undefined
  t.teardown(() => { broker?.kill('SIGKILL'); rmSync(dir, { recursive: true, force: true }) })

  const cli = async (...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> =>
    await tool(process.execPath, [CLI, ...args, '--config', cfg])
  const events = (): Event[] => readFileSync(logFile, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l))

  /** Resolves when `pred` holds for the log, or fails after `ms`. */
  async function logged (pred: (es: Event[]) => boolean, what: string, ms = 10000): Promise<Event[]> {
    for (let waited = 0; waited <= ms; waited += 50) {
      const es = events()
      if (pred(es)) return es
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    throw new Error(`not logged within ${ms} ms: ${what}`)
  }

  t.test('a real broker logs failed logins, lockouts and injection attempts to a file', async (t) => {
    t.ok(existsSync(CLI), 'dist/ is built (npm run build)')
    const certs = await tool(process.execPath, [CLI, 'certs', 'init', '--out', join(dir, 'certs')])
    t.equal(certs.code, 0, certs.stderr)
    writeFileSync(cfg, [
      'listeners:',
      '  - { type: tls, host: 127.0.0.1, port: 0, cert: certs/server.crt, key: certs/server.key }',
      '  - { type: tls, host: "::1", port: 0, cert: certs/server.crt, key: certs/server.key }',
      'auth:',
      '  store: { type: file, path: data/users.json }',
      '  lockout: { window: 900, maxFailuresPerUser: 3, maxFailuresPerIp: 6, duration: 1, maxDuration: 1 }',
      ''
    ].join('\n'))
    const secrets: Record<string, string> = {}
    for (const u of ['alice', 'bob']) {
      const r = await cli('user', 'add', u, '--password', `${u}-password`, '--json')
      t.equal(r.code, 0, r.stderr)
      secrets[u] = JSON.parse(r.stdout).totpSecret
    }

    const out = openSync(logFile, 'a')
    broker = spawn(process.execPath, [CLI, 'start', '--config', cfg], { cwd: dir, stdio: ['ignore', out, 'inherit'] })
    closeSync(out)
    const ready = (await logged((es) => es.some((e) => e.event === 'broker.ready'), 'broker.ready')).find((e) => e.event === 'broker.ready') as Event
    const [v4, v6] = (ready.listeners as string[]).map((l) => Number(l.split(':').pop()))
    t.ok((v4 ?? 0) > 0 && (v6 ?? 0) > 0, 'listening on 127.0.0.1 and ::1')

    const ca = readFileSync(join(dir, 'certs', 'ca.crt'))
    /** One CONNECT; resolves 0 when accepted (then closes), else the CONNACK reason / return code. */
    const attempt = async (host: '127.0.0.1' | '::1', o: IClientOptions): Promise<number> => await new Promise((resolve, reject) => {
      const c = mqtt.connect({ host, port: host === '::1' ? v6 : v4, protocol: 'mqtts', ca, servername: 'localhost', reconnectPeriod: 0, connectTimeout: 10000, protocolVersion: 5, ...o })
      const timer = setTimeout(() => { c.end(true); reject(new Error('no CONNACK within 10 s')) }, 10000)
      c.on('connect', () => { clearTimeout(timer); c.end(true); resolve(0) })
      c.on('error', (err: any) => { clearTimeout(timer); c.end(true); resolve(typeof err.code === 'number' ? err.code : -1) })
      // A locked-out address is closed before its TLS handshake: no CONNACK at all.
      c.on('close', () => { clearTimeout(timer); c.end(true); resolve(-1) })
    })
    const code = (u: string, steps = 0): string => currentCode(secrets[u] as string, Date.now() + steps * 30_000)
    const injected = {
      // Closes the clientId string and adds members of its own.
      members: 'x","reason":"bad_password","remote":"6.6.6.6',
      // A second "log line" after a newline, and a line separator and carriage return.
      line: 'x\n{"level":40,"event":"login.failed","reason":"bad_password","clientId":"y","remote":"6.6.6.7","msg":"login refused"}',
      separators: 'x\u2028\u0085\r,"remote":"6.6.6.8"',
      lockout: 'x","event":"auth.lockout","scope":"ip","remote":"6.6.6.9'
    }

    const alice = `alice|${code('alice')}`
    t.equal(await attempt('127.0.0.1', { username: alice, password: 'alice-password', clientId: 'alice-ok' }), 0, 'login.ok')
    t.equal(await attempt('127.0.0.1', { username: alice, password: 'alice-password', clientId: 'alice-replay' }), 0x86, 'replayed_otp')
    t.equal(await attempt('127.0.0.1', { username: `alice|${code('alice', 1)}`, password: 'alice-password', clientId: injected.members, will: { topic: 'metrics/bob/Estado', payload: Buffer.from('x'), qos: 0, retain: false } }), 0x87, 'will_denied, with injected members')
    t.equal(await attempt('127.0.0.1', { username: `bob|${code('bob')}`, password: 'wrong-password', clientId: injected.line }), 0x86, 'bad_password, with an injected line')
    t.equal(await attempt('127.0.0.1', { username: 'mallory|123456', password: 'whatever', clientId: injected.separators }), 0x86, 'unknown_user, with separators')
    t.equal(await attempt('::1', { username: `bob|${code('bob', 5)}`, password: 'bob-password', clientId: 'bob-otp' }), 0x86, 'bad_otp over IPv6')
    // A wrong code proves nothing about bob (counted from ::1 only); wrong passwords behind a
    // valid code count against bob everywhere.
    t.equal(await attempt('::1', { username: `bob|${code('bob')}`, password: 'wrong-password', clientId: 'bob-pw' }), 0x86, 'bad_password over IPv6')
    t.equal(await attempt('::1', { username: `bob|${code('bob')}`, password: 'wrong-password', clientId: 'bob-pw2' }), 0x86, 'bad_password: bob is locked out')
    t.equal(await attempt('127.0.0.1', { username: `bob|${code('bob')}`, password: 'bob-password', clientId: injected.lockout }), 0x86, 'locked_out, with an injected lockout')
    for (const u of ['u1', 'u2']) t.equal(await attempt('::1', { username: `${u}|123456`, password: 'whatever', clientId: u }), 0x86, `unknown_user ${u}`)
    t.equal(await attempt('::1', { clientId: 'anon' }), 0x87, 'anonymous: ::1 is locked out')
    t.equal(await attempt('::1', { username: 'u3|123456', password: 'whatever', clientId: 'u3' }), -1, 'closed before TLS: ::1 is locked out')

    await logged((es) => es.filter((e) => e.event === 'auth.lockout_ended').length >= 2, 'the end of both lockouts')
    broker.kill('SIGTERM')
    await new Promise((resolve) => broker?.once('exit', resolve))
    broker = undefined

    const es = events()
    const reasons = new Set(es.filter((e) => e.event === 'login.failed').map((e) => e.reason))
    for (const r of ['replayed_otp', 'will_denied', 'bad_password', 'unknown_user', 'bad_otp', 'locked_out', 'anonymous']) t.ok(reasons.has(r), `login.failed ${r} logged`)
    t.ok(es.some((e) => e.event === 'login.ok' && e.remote === '127.0.0.1'), 'login.ok logged')
    t.same(es.filter((e) => e.event === 'auth.lockout').map((e) => [e.scope, e.remote]), [['user', '::1'], ['ip', '::1']], 'one lockout of bob, one of ::1')
    // Named by key: the values would break TAP's own lines.
    for (const [name, id] of Object.entries(injected)) t.ok(es.some((e) => e.clientId === id), `clientId with injected ${name} logged as sent`)
  })

  t.test('fail2ban-regex extracts each counted event\'s own address and its time', async (t) => {
    const es = events()
    const got = await extracted(logFile)
    const want = expectedBans(es)
    t.same(got.map(([ip]) => ip), want, 'the addresses, in log order')
    t.same(want, ['127.0.0.1', '127.0.0.1', '127.0.0.1', '::1', '::1', '::1', '::1', '::1', '::1', '::1', '::1'],
      'replayed_otp, bad_password, unknown_user from 127.0.0.1; bad_otp, 2 × bad_password + lockout of bob, 2 × unknown_user, anonymous + lockout of ::1 from ::1')
    t.notOk(got.some(([ip]) => ip.startsWith('6.6.6.')), 'no address from inside a clientId')
    const times = es.filter((e) => (e.event === 'login.failed' && COUNTED.includes(e.reason)) || e.event === 'auth.lockout').map((e) => Date.parse(e.time) / 1000)
    got.forEach(([, time], i) => t.ok(Math.abs(time - (times[i] as number)) < 1, `line ${i + 1}: fail2ban's time is the event's "time"`))
    const s = await summary(logFile)
    t.equal(s.lines, es.length, 'every line read')
    t.equal(s.matched, want.length, 'login.ok, will_denied, locked_out, lockout ends and the rest do not match')
    t.equal(s.dated, es.length, 'every line has a date fail2ban understands')
  })

  t.test('every login failure is classified, and the filter counts exactly what the lockout counts', async (t) => {
    const union = /export type LoginFailure =([\s\S]*?)\n\n/.exec(read('src/types.ts'))?.[1] ?? ''
    const reasons = [...union.matchAll(/\|\s*'(\w+)'/g)].map((m) => m[1])
    t.ok(reasons.length > 10, 'LoginFailure read from src/types.ts')
    t.same([...reasons].sort(), [...COUNTED, ...NOT_COUNTED].sort(), 'each reason is COUNTED or NOT_COUNTED here')
    const guess = /^_guess = (.*)$/m.exec(readFileSync(FILTER, 'utf8'))?.[1]?.split('|') ?? []
    t.same([...guess].sort(), [...COUNTED].sort(), 'the filter\'s _guess is COUNTED')
    // The broker's own brute-force counting (src/auth/lockout-keys.ts COUNTS): a refusal that is not
    // a guess must neither lock an account nor ban an address.
    const counts = /const COUNTS: Record<LoginFailure, boolean> = \{([\s\S]*?)\n\}/.exec(read('src/auth/lockout-keys.ts'))?.[1] ?? ''
    const lockoutCounted = [...counts.matchAll(/(\w+): true/g)].map((m) => m[1])
    t.ok(lockoutCounted.length > 0, 'COUNTS read from src/auth/lockout-keys.ts')
    t.same([...lockoutCounted].sort(), [...COUNTED].sort())
  })

  t.test('each reason, address form and time format in a line written by pino', async (t) => {
    const real = events().find((e) => e.event === 'login.failed' && e.reason === 'bad_password') as Event
    const file = join(dir, 'variants.log')
    const lines: string[] = []
    const want: string[] = []
    const variant = (changes: Event, expect: string | undefined): void => {
      lines.push(JSON.stringify({ ...real, ...changes }))
      if (expect !== undefined) want.push(expect)
    }
    for (const reason of [...COUNTED, ...NOT_COUNTED]) variant({ reason, remote: '192.0.2.1' }, COUNTED.includes(reason) ? '192.0.2.1' : undefined)
    // A listener on :: reports IPv4 peers mapped; a link-local peer carries its zone.
    variant({ remote: '::ffff:198.51.100.7' }, '198.51.100.7')
    variant({ remote: '2001:db8::7' }, '2001:db8::7')
    variant({ remote: 'fe80::7%eth0' }, 'fe80::7')
    variant({ event: 'login.ok', remote: '192.0.2.2' }, undefined)
    variant({ event: 'auth.lockout_ended', remote: '192.0.2.3' }, undefined)
    // A broker embedded with a pino logger of its own (pino's defaults): "time" in epoch ms.
    const { level: _l, time: _t, name: _n, msg, ...fields } = real
    const embedded = join(dir, 'embedded.log')
    const logger = pino(pino.destination({ dest: embedded, sync: true }))
    logger.warn({ ...fields, remote: '192.0.2.4' }, msg)
    const epochLine = readFileSync(embedded, 'utf8').trim()
    t.match(epochLine, /^\{"level":40,"time":\d{13},/, 'pino\'s default time is epoch ms')
    lines.push(epochLine)
    want.push('192.0.2.4')
    writeFileSync(file, lines.join('\n') + '\n')
    const got = await extracted(file)
    t.same(got.map(([ip]) => ip), want)
    t.ok(Math.abs((got.at(-1)?.[1] ?? 0) - JSON.parse(epochLine).time / 1000) < 1, 'epoch ms read as such')
    t.equal((await summary(file)).dated, lines.length, 'both time formats are dates')
  })

  t.test('the jails pass fail2ban-client\'s configuration test, for the journal and for a file', async (t) => {
    const conf = join(dir, 'fail2ban')
    cpSync('/etc/fail2ban', conf, { recursive: true })
    // Debian's own jails (sshd) read logs this machine may not have.
    for (const f of readdirSync(join(conf, 'jail.d'))) rmSync(join(conf, 'jail.d', f))
    cpSync(FILTER, join(conf, 'filter.d', 'mqtt-bastion.conf'))
    cpSync(JAIL, join(conf, 'jail.d', 'mqtt-bastion.local'))
    const check = async (): Promise<string> => {
      const r = await tool('fail2ban-client', ['-c', conf, '-t'])
      t.equal(r.code, 0, 'fail2ban-client -t exits 0')
      t.match(r.stdout + r.stderr, /OK: configuration test is successful/)
      return (await tool('fail2ban-client', ['-c', conf, '-d'])).stdout
    }
    const journal = await check()
    t.match(journal, "['add', 'mqtt-bastion', 'systemd']", 'the enabled jail reads the journal')
    t.match(journal, `['set', 'mqtt-bastion', 'addjournalmatch', '_SYSTEMD_UNIT=${basename('scripts/mqtt-bastion.service')}']`, 'of the unit scripts/ ships')
    t.notMatch(journal, "'mqtt-bastion-file'", 'the file jail is off')
    writeFileSync(join(conf, 'jail.d', 'zz-test.local'), `[mqtt-bastion]\nenabled = false\n[mqtt-bastion-file]\nenabled = true\nlogpath = ${logFile}\n`)
    const fileJail = await check()
    t.match(fileJail, `['set', 'mqtt-bastion-file', 'addlogpath', '${logFile}', 'head']`)
    t.match(fileJail, "['set', 'mqtt-bastion-file', 'maxretry', 20]")
    t.notMatch(fileJail, "['add', 'mqtt-bastion',", 'the journal jail is off')
  })

  t.test('fail2ban-server with the file jail bans ::1 from the broker\'s log, and nothing named in a clientId', async (t) => {
    const conf = join(dir, 'fail2ban-run')
    cpSync('/etc/fail2ban', conf, { recursive: true })
    for (const f of readdirSync(join(conf, 'jail.d'))) rmSync(join(conf, 'jail.d', f))
    cpSync(FILTER, join(conf, 'filter.d', 'mqtt-bastion.conf'))
    cpSync(JAIL, join(conf, 'jail.d', 'mqtt-bastion.local'))
    // A private server: own socket, no database, and the dummy action writes bans to a file
    // instead of touching the firewall.
    writeFileSync(join(conf, 'fail2ban.local'), `[Definition]\nlogtarget = ${join(dir, 'fail2ban.log')}\nsocket = ${join(dir, 'f2b.sock')}\npidfile = ${join(dir, 'f2b.pid')}\ndbfile = :memory:\n`)
    // The log holds 7 counted events from ::1 and 3 from 127.0.0.1 (the first test): 7 bans
    // ::1 only. Loopback is normally ignored (ignoreself); here it is all there is.
    const bans = join(dir, 'bans')
    writeFileSync(join(conf, 'jail.d', 'zz-test.local'), `[DEFAULT]\nignoreself = false\nbanaction = dummy[target=${bans}]\n` +
      `[mqtt-bastion]\nenabled = false\n[mqtt-bastion-file]\nenabled = true\nlogpath = ${logFile}\nmaxretry = 7\n`)
    const server = spawn('fail2ban-server', ['-f', '-x', '-c', conf, 'start'], { stdio: 'ignore' })
    const exited = new Promise((resolve) => server.once('exit', resolve))
    t.teardown(() => { server.kill() })
    const banned = async (): Promise<string[]> => {
      const r = await tool('fail2ban-client', ['-c', conf, 'status', 'mqtt-bastion-file'])
      return (/Banned IP list:\s*(.*)/.exec(r.stdout)?.[1] ?? '').split(/\s+/).filter((ip) => ip !== '')
    }
    let list: string[] = []
    for (let i = 0; i < 100 && list.length === 0; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100))
      list = await banned()
    }
    t.same(list, ['::1'], 'banned: ::1 (8 failures), not 127.0.0.1 (3)')
    // The ban list is updated before the action has written its line: wait for it (bounded).
    const told = (): string[] => existsSync(bans) ? readFileSync(bans, 'utf8').split('\n').filter((l) => l.startsWith('+')) : []
    for (let i = 0; i < 50 && told().length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 100))
    t.same(told(), ['+::1'], 'the action was told to ban ::1 only')
    t.equal((await tool('fail2ban-client', ['-c', conf, 'stop'])).code, 0, 'fail2ban-client stop')
    await exited
  })
}
