// Names are plain data: a client id, filter or topic named like a member of Object.prototype
// (`constructor`, `__proto__`, `toString`, ...) or of Function / Array prototypes is one more
// string. The built broker runs as its own process (a crash is an exit, not a thrown error in
// the test), logged-in clients use every such name in every role with MQTT 5 and 3.1.1 over raw
// sockets, and each refusal must carry its proper code. A broker that dies is recorded, started
// again for the remaining roles (so one run shows every role that still kills it), and fails the test.
import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { currentCode } from '../../src/crypto/totp.js'
import { brokerFolder, startBrokerProcess, type BrokerProcess } from '../helpers/fuzz.js'
import { connackCode, describe, rawLogin, type End, type Packet, type RawMqtt, type RawTarget } from '../helpers/raw-mqtt.js'

const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
const PASSWORD = 'correct horse battery'
/** The user who probes with the names; `alice` is the honest pair that must keep working. */
const PROBE = 'mallory'
const HONEST = 'alice'
const BRANCH = `metrics/${PROBE}/`
// Every wait for an answer is bounded: a packet the broker never answers is a failure, not a hang.
const ACK_MS = 5000
// A dead broker is started again at most this often: past that, the rest of the run says nothing new.
const MAX_RESTARTS = 10
const VERSIONS = [5, 4] as const
// maxSubscriptions of the permissive broker.
const PERMISSIVE_MAX_SUBS = 16
type V = typeof VERSIONS[number]

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))
async function until (ms: number, ok: () => boolean): Promise<boolean> {
  for (const end = Date.now() + ms; !ok() && Date.now() < end;) await sleep(20)
  return ok()
}

/**
 * Every own property name of Object.prototype, Function.prototype and Array.prototype (read from
 * this Node, so new members are covered as they appear), plus `__proto__`, `prototype` and
 * `constructor` as one level among others; deduplicated. None holds `+` or `#`: each is also a topic.
 */
function prototypeNames (): string[] {
  const names = new Set<string>()
  for (const proto of [Object.prototype, Function.prototype, Array.prototype]) {
    for (const n of Object.getOwnPropertyNames(proto)) names.add(n)
  }
  for (const core of ['__proto__', 'prototype', 'constructor']) {
    for (const n of [core, `${core}/x`, `x/${core}`, `/${core}`, `${core}/`, `${core}/${core}`, `x/${core}/y`,
      `${BRANCH}${core}`, `${BRANCH}${core}/x`, `${BRANCH}x/${core}`, `metrics/${core}/Temperatura`]) names.add(n)
  }
  return [...names]
}
/** The names plus wildcard filters around the three cores. */
function filterNames (): string[] {
  const extra = ['__proto__', 'prototype', 'constructor'].flatMap((c) => [`${c}/#`, `+/${c}`, `${c}/+`, `${BRANCH}${c}/#`, `${BRANCH}+/${c}`])
  return [...new Set([...prototypeNames(), ...extra])]
}
const NAMES = prototypeNames()
const FILTERS = filterNames()
const hasWildcard = (s: string): boolean => s.includes('+') || s.includes('#')

// The default ACL (metrics policy): a filter is granted within the user's own branch only; a
// publish only to metrics/<user>/{Temperatura,Humedad,Estado}, which none of the names is.
const granted = (filter: string): boolean => filter.startsWith(BRANCH)
const subCode = (v: V, filter: string): number => granted(filter) ? 1 : v === 5 ? 0x87 : 0x80

t.comment(`${NAMES.length} names (${FILTERS.length} as filters)`)
t.ok(NAMES.includes('constructor') && NAMES.includes('__proto__') && NAMES.includes('hasOwnProperty') && NAMES.includes('push'), 'the names hold the prototype members')

const { dir, ca, secrets } = await brokerFolder('proto-names', [HONEST, PROBE], PASSWORD)
/** A config file: the default ACL, or (`permissive`) an acl_file granting the probe every topic. */
function writeConfig (file: string, permissive: boolean): string {
  const path = join(dir, file)
  writeFileSync(path, JSON.stringify({
    listeners: [{ type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key' }],
    auth: {
      store: { type: 'file', path: 'data/users.json' },
      // Hundreds of logins reuse the current code.
      totp: { replayProtection: false },
      lockout: { maxFailuresPerIp: 0, maxFailuresPerUser: 0 }
    },
    ...(permissive ? { acl: { policy: 'mosquitto-acl', file: 'acl' } } : {}),
    limits: {
      maxConnectionsPerIp: 0,
      // Only the names are under test here: no other limit may refuse a packet.
      publishRate: { messages: 100_000, bytes: 100_000_000 },
      subscribeRate: { packets: 100_000, filters: 1_000_000 },
      // The permissive broker checks that prototype-named filters still count against this.
      maxSubscriptions: permissive ? PERMISSIVE_MAX_SUBS : 10_000
    },
    log: { level: 'info' }
  }))
  return path
}
writeFileSync(join(dir, 'acl'), `user ${PROBE}\ntopic readwrite #\n\nuser ${HONEST}\ntopic readwrite metrics/${HONEST}/#\n`)
const defaultConfig = writeConfig('bastion.json', false)
const permissiveConfig = writeConfig('permissive.json', true)

const login = (user: string): { username: string; password: string } => ({ username: `${user}|${currentCode(secrets[user] as string)}`, password: PASSWORD })

/** What the broker wrote when it died: the error line and the first frame. */
function cause (b: BrokerProcess): string {
  const error = b.tail.find((l) => /Error\b|\berror\b/.test(l) && !l.startsWith('{')) ?? ''
  const frame = b.tail.find((l) => /^\s+at /.test(l)) ?? ''
  return `${error.trim()} ${frame.trim()}`.trim() || b.tail.slice(-3).join(' | ')
}

class BrokerDied extends Error {}

/** One broker config under test, restarted (and recorded) when it dies. */
interface Under { config: string; b: BrokerProcess; target: RawTarget; exits: string[] }
async function startUnder (config: string): Promise<Under> {
  const b = await startBrokerProcess(CLI, config, dir)
  return { config, b, target: { port: b.port, ca }, exits: [] }
}
const main = await startUnder(defaultConfig)
// Every broker process started here, stopped at the end (stopping an exited one does nothing).
const running: BrokerProcess[] = [main.b]
t.teardown(async () => { for (const b of running) await b.stop() })
let restarts = 0

/** Throws BrokerDied when the broker process is gone (waiting briefly after a lost answer). */
async function check (u: Under, what: string, lost: boolean): Promise<void> {
  if (lost) await until(1000, () => u.b.exited() !== undefined)
  if (u.b.exited() !== undefined) throw new BrokerDied(what)
}

/**
 * Runs one role; `fail` collects refusals with the wrong code. A dead broker fails the role,
 * is recorded with what killed it, and is replaced so later roles still run.
 */
async function role (t: Test, u: Under, name: string, body: (fail: (what: string) => void) => Promise<void>): Promise<void> {
  const failures: string[] = []
  try {
    if (u.b.exited() !== undefined) throw new BrokerDied('before the role started')
    await body((what) => { failures.push(what) })
    await check(u, 'the end of the role', false)
    t.pass('the broker process is still running')
  } catch (err) {
    // A connection refused or reset is a dead broker too, if it is gone.
    if (!(err instanceof BrokerDied) && !await until(1000, () => u.b.exited() !== undefined)) throw err
    const line = `${name}: ${(err as Error).message} -> ${u.b.exited() as string}: ${cause(u.b)}`
    u.exits.push(line)
    t.fail(`the broker process exited: ${line}`)
    if (restarts++ < MAX_RESTARTS) {
      const next = await startBrokerProcess(CLI, u.config, dir)
      running.push(next)
      u.b = next
      u.target = { port: next.port, ca }
    }
  }
  t.same(failures.slice(0, 20), [], `${name}: every answer as expected (${failures.length} not)`)
}

/** A logged-in probe session, or a failure naming what answered instead of CONNACK 0. */
async function probe (u: Under, v: V, clientId: string, user = PROBE): Promise<RawMqtt> {
  const { c, connack } = await rawLogin(u.target, v, { clientId, ...login(user) })
  if (connackCode(connack) !== 0) {
    c.destroy()
    await check(u, `the login of ${JSON.stringify(clientId)} (v${v})`, true)
    throw new Error(`login of ${clientId} (v${v}) refused: ${describe(connack)}`)
  }
  return c
}

/** A session that reconnects after the broker closed it, and numbers its packets. */
class Session {
  c: RawMqtt | undefined
  /** The step waiting for its answer, if any (to name what was in flight when a broker died). */
  step: string | undefined
  private id = 0
  constructor (readonly u: Under, readonly v: V, readonly clientId: string) {}
  async ready (): Promise<RawMqtt> {
    if (this.c === undefined || this.c.isClosed()) this.c = await probe(this.u, this.v, this.clientId)
    return this.c
  }

  messageId (): number { this.id = this.id % 65535 + 1; return this.id }

  /** Sends and waits for the answer `match` accepts; a lost answer is checked against a dead broker. */
  async ask (what: string, packet: Record<string, unknown>, match: (p: Packet) => boolean): Promise<Packet | End> {
    this.step = what
    const c = await this.ready()
    c.send(packet)
    const answer = await c.until(match, ACK_MS)
    if (typeof answer !== 'string') this.step = undefined
    else {
      c.destroy()
      await check(this.u, what, true)
    }
    return answer
  }

  /**
   * Sends `packet` and reads until each of `wants` has matched a packet (in any order),
   * acknowledging QoS 1 deliveries; resolves with the names of those that never came.
   */
  async collect (what: string, packet: Record<string, unknown>, wants: Record<string, (p: Packet) => boolean>): Promise<string[]> {
    this.step = what
    const c = await this.ready()
    const missing = new Map(Object.entries(wants))
    c.send(packet)
    for (const end = Date.now() + ACK_MS; missing.size > 0 && Date.now() < end;) {
      const p = await c.next(Math.max(1, end - Date.now()))
      if (typeof p === 'string') break
      if (p.cmd === 'publish' && p.qos > 0) c.send({ cmd: 'puback', messageId: p.messageId })
      for (const [name, match] of missing) if (match(p)) { missing.delete(name); break }
      // The broker's sockets keep Nagle's algorithm on: its next packet waits for our ACK,
      // which Linux delays by up to 40 ms unless data goes back. A PINGREQ carries it now.
      if (missing.size > 0 && p.cmd !== 'pingresp') c.send({ cmd: 'pingreq' })
    }
    if (missing.size === 0) this.step = undefined
    else {
      c.destroy()
      await check(this.u, what, true)
    }
    return [...missing.keys()]
  }

  async subscribe (what: string, filters: string[], qos = 1): Promise<number[] | string> {
    const messageId = this.messageId()
    const a = await this.ask(what, { cmd: 'subscribe', messageId, subscriptions: filters.map((topic) => ({ topic, qos })) }, (p) => p.cmd === 'suback' && p.messageId === messageId)
    return typeof a === 'string' ? a : a.granted as number[]
  }

  /** The UNSUBACK's reason codes (MQTT 5), [] for a 3.1.1 UNSUBACK, or what happened instead. */
  async unsubscribe (what: string, filters: string[]): Promise<number[] | string> {
    const messageId = this.messageId()
    const a = await this.ask(what, { cmd: 'unsubscribe', messageId, unsubscriptions: filters }, (p) => p.cmd === 'unsuback' && p.messageId === messageId)
    return typeof a === 'string' ? a : this.v === 5 ? a.granted as number[] : []
  }

  end (): void { this.c?.destroy() }
}

/**
 * With every topic granted: each filter is subscribed (and again at another QoS), a publish to
 * each name comes back to its own subscription at QoS 1 and 2, is retained and cleared, and each
 * filter is unsubscribed (MQTT 5: 0x00, then 0x11 once it is gone).
 */
async function grantedNames (s: Session, filters: string[], fail: (what: string) => void): Promise<void> {
  const v = s.v
  const ok5 = (codes: number[]): number[] => v === 5 ? codes : []
  const same = (what: string, got: unknown, want: unknown): void => { if (JSON.stringify(got) !== JSON.stringify(want)) fail(`${what}: ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`) }
  const delivery = (topic: string, payload: string, retain?: boolean) => (p: Packet): boolean =>
    p.cmd === 'publish' && p.topic === topic && p.payload.toString() === payload && (retain === undefined || p.retain === retain)
  const ack = (cmd: string, messageId: number) => (p: Packet): boolean => p.cmd === cmd && p.messageId === messageId && (p.reasonCode ?? 0) === 0
  const step = async (what: string, packet: Record<string, unknown>, wants: Record<string, (p: Packet) => boolean>): Promise<void> => {
    const missing = await s.collect(what, packet, wants)
    if (missing.length > 0) fail(`${what}: no ${missing.join(', ')}`)
  }
  for (const f of filters) await exclusive(f, async () => {
    const q = `${JSON.stringify(f)} (v${v})`
    same(`SUBSCRIBE ${q}`, await s.subscribe(`SUBSCRIBE ${q}`, [f]), [1])
    same(`SUBSCRIBE ${q} again at QoS 0`, await s.subscribe(`SUBSCRIBE ${q} at QoS 0`, [f], 0), [0])
    same(`SUBSCRIBE [probe/#, ${q}]`, await s.subscribe(`SUBSCRIBE [probe/#, ${q}]`, ['probe/#', f]), [1, 1])
    if (!hasWildcard(f)) {
      let id = s.messageId()
      await step(`PUBLISH QoS 1 ${q} to its own subscription`, { cmd: 'publish', topic: f, payload: `live ${f}`, qos: 1, messageId: id, retain: false, dup: false }, { 'PUBACK 0': ack('puback', id), delivery: delivery(f, `live ${f}`) })
      // QoS 2 in full: PUBREC, PUBREL, PUBCOMP.
      id = s.messageId()
      await step(`PUBLISH QoS 2 ${q}`, { cmd: 'publish', topic: f, payload: `q2 ${f}`, qos: 2, messageId: id, retain: false, dup: false }, { 'PUBREC 0': ack('pubrec', id), delivery: delivery(f, `q2 ${f}`) })
      await step(`PUBREL after ${q}`, { cmd: 'pubrel', messageId: id }, { 'PUBCOMP 0': ack('pubcomp', id) })
    }
    same(`UNSUBSCRIBE ${q}`, await s.unsubscribe(`UNSUBSCRIBE ${q}`, [f]), ok5([0]))
    same(`UNSUBSCRIBE ${q} again`, await s.unsubscribe(`UNSUBSCRIBE ${q} again`, [f]), ok5([0x11]))
    if (!hasWildcard(f)) {
      // Retained under the name, sent to a new subscription, then cleared.
      let id = s.messageId()
      await step(`PUBLISH retained ${q}`, { cmd: 'publish', topic: f, payload: `kept ${f}`, qos: 1, messageId: id, retain: true, dup: false }, { 'PUBACK 0': ack('puback', id) })
      id = s.messageId()
      const subscribed = id
      await step(`SUBSCRIBE ${q} for its retained message`, { cmd: 'subscribe', messageId: id, subscriptions: [{ topic: f, qos: 1 }] }, { SUBACK: (p) => p.cmd === 'suback' && p.messageId === subscribed, 'retained message': delivery(f, `kept ${f}`, true) })
      id = s.messageId()
      await step(`PUBLISH an empty retained ${q}`, { cmd: 'publish', topic: f, payload: '', qos: 1, messageId: id, retain: true, dup: false }, { 'PUBACK 0': ack('puback', id), delivery: delivery(f, '') })
      same(`UNSUBSCRIBE ${q} after the retained message`, await s.unsubscribe(`UNSUBSCRIBE ${q}`, [f]), ok5([0]))
    }
  })
}

// Sessions running at once never use the same name at the same time: the retained message
// under a name is one per broker.
const inUse = new Map<string, Promise<void>>()
async function exclusive (name: string, body: () => Promise<void>): Promise<void> {
  for (let held = inUse.get(name); held !== undefined; held = inUse.get(name)) await held
  const run = body()
  const settled = run.then(() => {}, () => {})
  inUse.set(name, settled)
  try {
    await run
  } finally {
    if (inUse.get(name) === settled) inUse.delete(name)
  }
}

// The honest pair on the default broker, connected before any name is used: the subscriber must
// still be there (same process, same connection) to receive the last message.
const mqttOptions = (user: string, clientId: string, v: 4 | 5 = 5): IClientOptions => ({
  host: '127.0.0.1', port: main.b.port, protocol: 'mqtts', ca, servername: 'localhost', rejectUnauthorized: true,
  reconnectPeriod: 0, connectTimeout: 10_000, protocolVersion: v, clientId, ...login(user)
})
const honestSub = await mqtt.connectAsync(mqttOptions(HONEST, 'honest-sub'))
await honestSub.subscribeAsync(`metrics/${HONEST}/#`, { qos: 1 })
// The probe's own branch, watched: refused publishes must never be delivered.
const watcher = await mqtt.connectAsync(mqttOptions(PROBE, 'probe-watch'))
await watcher.subscribeAsync(`${BRANCH}#`, { qos: 1 })
const honestGot: string[] = []
const watched: string[] = []
const dropped: string[] = []
let ending = false
honestSub.on('message', (topic, payload) => { honestGot.push(`${topic} ${payload.toString()}`) })
watcher.on('message', (topic) => { watched.push(topic) })
for (const [name, c] of [['honest subscriber', honestSub], ['watcher', watcher]] as Array<[string, MqttClient]>) {
  c.on('close', () => { if (!ending) dropped.push(name) })
}

t.test('every name is a client id that logs in, publishes, is taken over and ends like any other', async (t) => {
  for (const v of VERSIONS) {
    await role(t, main, `client ids (v${v})`, async (fail) => {
      for (const [i, name] of NAMES.entries()) {
        const what = `client id ${JSON.stringify(name)} (v${v})`
        const first = await rawLogin(main.target, v, { clientId: name, ...login(PROBE) })
        if (connackCode(first.connack) !== 0) {
          first.c.destroy()
          await check(main, what, true)
          fail(`${what}: ${describe(first.connack)} instead of CONNACK 0`)
          continue
        }
        first.c.send({ cmd: 'publish', topic: `${BRANCH}Temperatura`, payload: `{"id":${i}}`, qos: 1, messageId: 1, retain: false, dup: false })
        const ack = await first.c.until((p) => p.cmd === 'puback', ACK_MS)
        if (typeof ack === 'string' || (ack.reasonCode ?? 0) !== 0) { await check(main, `${what}, PUBLISH`, true); fail(`${what}: ${describe(ack)} instead of PUBACK 0`) }
        // The same user takes the id over: the old session is told (v5) and closed.
        const second = await rawLogin(main.target, v, { clientId: name, ...login(PROBE) })
        if (connackCode(second.connack) !== 0) {
          await check(main, `${what}, takeover`, true)
          fail(`${what}, takeover: ${describe(second.connack)} instead of CONNACK 0`)
        }
        if (v === 5) {
          const told = await first.c.until((p) => p.cmd === 'disconnect', ACK_MS)
          if (typeof told === 'string' || told.reasonCode !== 0x8e) fail(`${what}: the old session got ${describe(told)}, not DISCONNECT 0x8E`)
        }
        if (!await first.c.closed(ACK_MS)) fail(`${what}: the old session was not closed`)
        second.c.send({ cmd: 'pingreq' })
        const pong = await second.c.until((p) => p.cmd === 'pingresp', ACK_MS)
        if (typeof pong === 'string') { await check(main, `${what}, PINGREQ`, true); fail(`${what}: ${pong} instead of PINGRESP`) }
        // Half end cleanly, half drop (their server will names the id in its payload).
        if (i % 2 === 0) second.c.send({ cmd: 'disconnect' })
        else second.c.destroy()
        await second.c.closed(ACK_MS)
        first.c.destroy()
        second.c.destroy()
        await check(main, `${what}, disconnect`, false)
      }
    })
  }
})

t.test('every name as a SUBSCRIBE filter, alone and beside an allowed filter, gets its SUBACK code', async (t) => {
  for (const v of VERSIONS) {
    await role(t, main, `SUBSCRIBE filters (v${v})`, async (fail) => {
      const s = new Session(main, v, `probe-sub-v${v}`)
      for (const f of FILTERS) {
        const want = subCode(v, f)
        const cases: Array<[string[], number[]]> = [[[f], [want]], [[`${BRANCH}#`, f], [1, want]], [[f, `${BRANCH}+`], [want, 1]]]
        for (const [filters, codes] of cases) {
          const what = `SUBSCRIBE ${JSON.stringify(filters)} (v${v})`
          const got = await s.subscribe(what, filters)
          if (JSON.stringify(got) !== JSON.stringify(codes)) fail(`${what}: ${JSON.stringify(got)}, expected ${JSON.stringify(codes)}`)
        }
      }
      s.end()
    })
  }
})

t.test('every name as an UNSUBSCRIBE filter gets its UNSUBACK', async (t) => {
  for (const v of VERSIONS) {
    await role(t, main, `UNSUBSCRIBE filters (v${v})`, async (fail) => {
      const s = new Session(main, v, `probe-unsub-v${v}`)
      // MQTT 5 says per filter: 0x00 it was held, 0x11 no subscription existed.
      const expect = (codes: number[]): number[] => v === 5 ? codes : []
      for (const f of FILTERS) {
        const never = `UNSUBSCRIBE [${JSON.stringify(f)}] never subscribed (v${v})`
        const got = await s.unsubscribe(never, [f])
        if (JSON.stringify(got) !== JSON.stringify(expect([0x11]))) fail(`${never}: ${JSON.stringify(got)}`)
        const subscribed = await s.subscribe(`SUBSCRIBE [${JSON.stringify(f)}, ${BRANCH}#] (v${v})`, [f, `${BRANCH}#`])
        if (JSON.stringify(subscribed) !== JSON.stringify([subCode(v, f), 1])) fail(`SUBSCRIBE ${f} before UNSUBSCRIBE (v${v}): ${JSON.stringify(subscribed)}`)
        const both = `UNSUBSCRIBE [${JSON.stringify(f)}, ${BRANCH}#] (v${v})`
        const again = await s.unsubscribe(both, [f, `${BRANCH}#`])
        if (JSON.stringify(again) !== JSON.stringify(expect([granted(f) ? 0 : 0x11, 0]))) fail(`${both}: ${JSON.stringify(again)}`)
      }
      s.end()
    })
  }
})

t.test('every name as a PUBLISH topic, bare and in the user\'s branch, is refused at QoS 0, 1 and 2', async (t) => {
  const topics = [...new Set([...NAMES, ...NAMES.map((n) => `${BRANCH}${n}`)])]
  t.ok(topics.every((topic) => !hasWildcard(topic)), 'no topic holds a wildcard')
  await role(t, main, 'PUBLISH topics (v5)', async (fail) => {
    // MQTT 5: PUBACK / PUBREC 0x87 and the session stays; QoS 0 is dropped without a word.
    const s = new Session(main, 5, 'probe-pub-v5')
    for (const topic of topics) {
      for (const qos of [0, 1, 2]) {
        const what = `PUBLISH QoS ${qos} ${JSON.stringify(topic)} (v5)`
        const messageId = s.messageId()
        const packet = { cmd: 'publish', topic, payload: 'x', qos, retain: false, dup: false, ...(qos > 0 ? { messageId } : {}) }
        if (qos === 0) {
          const c = await s.ready()
          c.send(packet)
          const pong = await s.ask(what, { cmd: 'pingreq' }, (p) => p.cmd === 'pingresp')
          if (typeof pong === 'string') fail(`${what}: ${pong} instead of a live session`)
          continue
        }
        const ack = await s.ask(what, packet, (p) => p.cmd === (qos === 1 ? 'puback' : 'pubrec') && p.messageId === messageId)
        if (typeof ack === 'string' || ack.reasonCode !== 0x87) fail(`${what}: ${describe(ack)} instead of ${qos === 1 ? 'PUBACK' : 'PUBREC'} 0x87`)
      }
    }
    s.end()
  })
  await role(t, main, 'PUBLISH topics (v4)', async (fail) => {
    // 3.1.1 has no refusal code for a PUBLISH: the connection is closed, with no acknowledgement.
    const jobs = topics.flatMap((topic) => [0, 1, 2].map((qos) => ({ topic, qos })))
    let next = 0
    const worker = async (): Promise<void> => {
      while (next < jobs.length) {
        const { topic, qos } = jobs[next++] as { topic: string; qos: number }
        const what = `PUBLISH QoS ${qos} ${JSON.stringify(topic)} (v4)`
        const c = await probe(main, 4, `probe-pub-v4-${next}`)
        c.send({ cmd: 'publish', topic, payload: 'x', qos, retain: false, dup: false, ...(qos > 0 ? { messageId: 1 } : {}) })
        const answer = await c.next(ACK_MS)
        if (answer !== 'closed') {
          c.destroy()
          await check(main, what, true)
          fail(`${what}: ${describe(answer)} instead of the connection closed`)
        }
      }
    }
    await Promise.all(Array.from({ length: 4 }, worker))
  })
  // Everything published into the probe's branch above was refused; what did arrive is the
  // client-id sessions' own readings and the server wills of those that dropped.
  await sleep(500)
  t.same([...new Set(watched)].filter((topic) => topic !== `${BRANCH}Temperatura` && topic !== `${BRANCH}Estado`), [], 'no refused publish was delivered')
})

t.test('with an acl_file granting every topic, names are subscribed, delivered, retained and unsubscribed like any other', async (t) => {
  const open = await startUnder(permissiveConfig)
  running.push(open.b)
  // Every name through every step; the broker's sockets delay each delivery by up to 40 ms
  // (Nagle, above), so both versions run at once, each over SHARDS sessions with a slice of the names.
  const SHARDS = 5
  await role(t, open, 'granted names (v5 and v4 at once)', async (fail) => {
    const sessions = VERSIONS.flatMap((v) => Array.from({ length: SHARDS }, (_, k) => new Session(open, v, `probe-open-v${v}-${k}`)))
    const results = await Promise.allSettled(sessions.map(async (s, k) => { await grantedNames(s, FILTERS.filter((_, i) => i % SHARDS === k % SHARDS), fail) }))
    for (const s of sessions) s.end()
    const died = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (died === undefined) return
    if (!(died.reason instanceof BrokerDied) && open.b.exited() === undefined) throw died.reason
    // Several steps were in flight: the broker's own stack (in the failure) tells which killed it.
    throw new BrokerDied(`one of ${sessions.map((s) => s.step).filter((w) => w !== undefined).join('; ')}`)
  })
  await role(t, open, 'maxSubscriptions with prototype-named filters', async (fail) => {
    // Filters named like Object.prototype members take a slot like any other filter.
    const s = new Session(open, 5, 'probe-open-limit')
    const names = NAMES.slice(0, PERMISSIVE_MAX_SUBS + 4)
    const codes: number[] = []
    for (const f of names) {
      const got = await s.subscribe(`SUBSCRIBE [${JSON.stringify(f)}] toward the limit`, [f])
      codes.push(typeof got === 'string' ? -1 : got[0] as number)
    }
    const want = names.map((_, i) => i < PERMISSIVE_MAX_SUBS ? 1 : 0x87)
    if (JSON.stringify(codes) !== JSON.stringify(want)) fail(`${names.length} filters, limit ${PERMISSIVE_MAX_SUBS}: ${JSON.stringify(codes)}, expected ${JSON.stringify(want)}`)
    s.end()
  })
  await open.b.stop()
  t.same(open.exits, [], 'the permissive broker process never exited')
})

t.test('the broker is still the same process, serving, after all of it', async (t) => {
  t.same(main.exits, [], 'the broker process never exited')
  t.equal(main.b.exited(), undefined, 'a broker process is running at the end')
  t.same(dropped, [], 'the honest subscriber and the watcher were never disconnected')
  if (main.b.exited() !== undefined) return
  const pub = await mqtt.connectAsync({ ...mqttOptions(HONEST, 'honest-pub'), port: main.b.port })
  await pub.publishAsync(`metrics/${HONEST}/Temperatura`, '{"value":21.5}', { qos: 1 })
  t.ok(await until(5000, () => honestGot.includes(`metrics/${HONEST}/Temperatura {"value":21.5}`)), 'an honest client logs in and publishes QoS 1; the subscriber connected at the start gets it')
  t.same(honestGot.filter((m) => m !== `metrics/${HONEST}/Temperatura {"value":21.5}`), [], 'and nothing else')
  ending = true
  await pub.endAsync()
  await Promise.all([honestSub.endAsync(true), watcher.endAsync(true)])
})
