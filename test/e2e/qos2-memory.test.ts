// Inbound QoS 2 state is bounded and goes with the session. A QoS 2 PUBLISH is kept by the broker
// (payload included) from its PUBREC until the client's PUBREL; a client that never sends PUBREL
// must meet the advertised Receive Maximum (MQTT 5: DISCONNECT 0x93, 3.1.1: closed), and what it
// made the broker keep must be freed when its session ends. The built broker runs as its own
// process, so its RSS (/proc) and its heap after a full GC are its own.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { currentCode } from '../../src/crypto/totp.js'
import { scrape, startBrokerProcess, brokerFolder, type GcResult } from '../helpers/fuzz.js'
import { connackCode, describe, rawLogin, type Packet, type RawMqtt, type RawTarget } from '../helpers/raw-mqtt.js'

const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
const PASSWORD = 'correct horse battery'
const KIB = 1024
const MIB = 1024 * KIB
const mib = (n: number): string => `${(n / MIB).toFixed(1)} MiB`
const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))
async function until (ms: number, ok: () => Promise<boolean> | boolean): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(100)) if (await ok()) return true
  return await ok()
}

// The attack: CLIENTS clients, each from its own loopback address, alternately MQTT 5 and 3.1.1,
// send QoS 2 PUBLISHes of PAYLOAD bytes to their own topic at RATE bytes/s each and never PUBREL,
// reconnecting (with a new client id) whenever they are disconnected, for ATTACK_MS.
const CLIENTS = 4
const PAYLOAD = 32 * KIB
const RATE = 4 * MIB
const ATTACK_MS = 10_000
// The same clients and rate, every PUBREL sent, before the attack (see the test).
const HONEST_MS = 4000
const TICK_MS = 25
// limits.receiveMaximum is left at its default: the value the broker advertises is the one
// enforced. A broker that advertises none is held to the documented default.
const DEFAULT_RECEIVE_MAXIMUM = 32
// Bound on the broker's RSS growth during the attack. What the broker may keep is at most
// receiveMaximum payloads per client: 32 x 32 KiB x 4 = 4 MiB (twice that if a copy sits in a
// parser or socket buffer). The rest is room for what the traffic itself costs until V8 and
// malloc collect it: 16 MiB/s of PUBLISH bytes read through TLS, a login every ~0.3 s per
// client, and allocator pages kept after a peak. Without the bound the broker keeps every
// payload: 16 MiB/s, ~160 MiB over the attack.
const RSS_BOUND = 64 * MIB
// After the attack and a full GC, heap plus memory held outside it (Buffers) back within this of
// the baseline: what a session kept must be gone with it.
const KEPT_MARGIN = 8 * MIB

const users = Array.from({ length: CLIENTS }, (_, k) => `dev${k}`)
const { dir, ca, secrets } = await brokerFolder('qos2', [...users, 'ids'], PASSWORD)
const config = join(dir, 'bastion.json')
writeFileSync(config, JSON.stringify({
  listeners: [{ type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key' }],
  auth: { store: { type: 'file', path: 'data/users.json' }, totp: { replayProtection: false }, lockout: { maxFailuresPerIp: 0, maxFailuresPerUser: 0 } },
  limits: {
    // Well above RATE (128 PUBLISHes, 4 MiB a second): the Receive Maximum is the only bound met.
    publishRate: { messages: 1000, bytes: 16 * MIB },
    maxConnectionsPerIp: 0,
    // The 48 KiB client ids are the point here (memory kept per id): MQTT's own maximum.
    maxClientIdLength: 65_535
  },
  // /metrics: the broker's own count of connected clients.
  monitoring: { enabled: true, port: 0 },
  log: { level: 'info' }
}))
const broker = await startBrokerProcess(CLI, config, dir)
t.teardown(() => broker.stop())
const target = (k: number): RawTarget => ({ port: broker.port, ca, localAddress: `127.0.0.${2 + k}` })
const login = (user: string): { username: string; password: string } => ({ username: `${user}|${currentCode(secrets[user] as string)}`, password: PASSWORD })
const kept = (m: GcResult): number => m.heapUsed + m.external
const connected = async (): Promise<number> => (await scrape(broker.monitoring as string)).get('bastion_connected_clients') ?? -1
/**
 * Full GCs every 500 ms until what is kept is within `margin` of `base`, for at most `ms`, or until
 * it stops going down: what is still being released (socket and log buffers of the clients just
 * gone) shrinks from one GC to the next; what is kept does not.
 */
async function settle (base: number, margin: number, ms: number): Promise<GcResult> {
  await broker.quiet(300, ms)
  let m = await broker.gc()
  for (let last = Infinity, end = Date.now() + ms; kept(m) > base + margin && kept(m) < last - 256 * KIB && Date.now() < end;) {
    last = kept(m)
    await sleep(500)
    m = await broker.gc()
  }
  return m
}

/** One connection of the traffic, as its client saw it. */
interface Round { client: number; version: 4 | 5; connack: number | string; receiveMaximum?: number; sent: number; pubrecs: number; disconnect?: number; closedByBroker: boolean }

/**
 * CLIENTS clients, each from its own loopback address (even: MQTT 5, odd: 3.1.1), send QoS 2
 * PUBLISHes of PAYLOAD bytes to their own topic at RATE bytes/s for `ms`, on new packet ids,
 * reconnecting with a new client id whenever their connection ends. `honest` clients answer each
 * PUBREC with PUBREL and end each connection themselves after 33 PUBLISHes (what the attack's
 * connections last); the others never send PUBREL. `at` runs once, `atMs` into the traffic, with
 * every client paused (connected, sending nothing, not reconnecting) until it is done.
 */
async function traffic (opts: { ms: number; honest: boolean; at?: { atMs: number; run: () => Promise<void> } }): Promise<Round[]> {
  const rounds: Round[] = []
  const payload = Buffer.alloc(PAYLOAD, 0x61)
  const start = Date.now()
  const end = start + opts.ms
  const perTick = RATE / PAYLOAD * TICK_MS / 1000
  // Open while `at` runs: the clients wait on it before each tick and before each login.
  let paused: Promise<void> | undefined
  const client = async (k: number): Promise<void> => {
    const version = k % 2 === 0 ? 5 : 4
    const topic = `metrics/${users[k] as string}/Temperatura`
    for (let n = 0; Date.now() < end; n++) {
      await paused
      const { c, connack } = await rawLogin(target(k), version, { clientId: `q2-${opts.honest ? 'h' : 'a'}${k}-${n}`, ...login(users[k] as string) })
      const round: Round = { client: k, version, connack: connackCode(connack), sent: 0, pubrecs: 0, closedByBroker: false }
      rounds.push(round)
      if (typeof connack !== 'string' && connack.properties?.receiveMaximum !== undefined) round.receiveMaximum = connack.properties.receiveMaximum
      if (round.connack !== 0) { c.destroy(); await sleep(100); continue }
      c.onPacket((p: Packet) => {
        if (p.cmd === 'pubrec') {
          round.pubrecs++
          if (opts.honest) c.send({ cmd: 'pubrel', messageId: p.messageId })
        } else if (p.cmd === 'disconnect') round.disconnect = p.reasonCode
      })
      // Paced: RATE bytes a second, in ticks.
      let credit = 0
      for (let id = 1; id <= 65535 && !c.isClosed() && Date.now() < end;) {
        if (opts.honest && id > DEFAULT_RECEIVE_MAXIMUM + 1) {
          await c.until((p) => p.cmd === 'pubcomp' && p.messageId === id - 1, 5000)
          c.send({ cmd: 'disconnect' })
          await c.closed(5000)
          break
        }
        await paused
        credit += perTick
        for (; credit >= 1 && id <= 65535 && !(opts.honest && id > DEFAULT_RECEIVE_MAXIMUM + 1); credit--) {
          c.send({ cmd: 'publish', topic, payload, qos: 2, messageId: id++, retain: false, dup: false })
          round.sent++
        }
        await c.drain()
        await sleep(TICK_MS)
      }
      round.closedByBroker = c.isClosed() && !opts.honest
      c.destroy()
    }
  }
  const pause = async (run: () => Promise<void>): Promise<void> => {
    let resume = (): void => {}
    paused = new Promise((resolve) => { resume = resolve })
    try { await sleep(4 * TICK_MS); await run() } finally { paused = undefined; resume() }
  }
  const { at: atOpt } = opts
  const at = atOpt === undefined ? Promise.resolve() : sleep(atOpt.atMs).then(async () => { await pause(atOpt.run) })
  await Promise.all([...Array.from({ length: CLIENTS }, async (_, k) => { await client(k) }), at])
  return rounds
}

t.test('QoS 2 without PUBREL meets the Receive Maximum and broker memory stays bounded', async (t) => {
  // The same traffic with every PUBREL sent first: RSS keeps the pages V8 and malloc took for it
  // (the honest traffic alone grows it by 50-80 MiB), so the attack is measured against that.
  const honest = await traffic({ ms: HONEST_MS, honest: true })
  t.same(honest.filter((r) => r.connack !== 0 || r.closedByBroker || r.disconnect !== undefined).map((r) => `client ${r.client}: CONNACK ${r.connack}, DISCONNECT ${String(r.disconnect)}`), [],
    `${honest.length} honest connections (PUBREL for each PUBREC) logged in and were never disconnected`)
  t.ok(await until(5000, async () => await connected() === 0), 'the honest clients are gone')
  const base = await settle(0, 0, 5000)
  const baseRss = broker.rss()

  let peak = baseRss
  const sampler = setInterval(() => { if (broker.exited() === undefined) peak = Math.max(peak, broker.rss()) }, 100)
  // Full GCs while the attackers are connected: what the broker keeps for them right then. The
  // attackers pause for it, and the GCs go on (settle) while what they had sent is still being
  // read and dropped: the packets in flight, which grow with the machine's load (20 MiB seen on
  // a loaded machine), are not what is kept.
  let during: GcResult | undefined
  const bound = 2 * DEFAULT_RECEIVE_MAXIMUM * PAYLOAD * CLIENTS + KEPT_MARGIN
  const rounds = await traffic({ ms: ATTACK_MS, honest: false, at: { atMs: ATTACK_MS - 2000, run: async () => { during = await settle(kept(base), bound, 6000) } } })
  clearInterval(sampler)
  t.equal(broker.exited(), undefined, 'the broker process is still running')
  if (broker.exited() !== undefined) return

  const advertised = rounds.find((r) => r.version === 5 && r.receiveMaximum !== undefined)?.receiveMaximum
  t.equal(typeof advertised, 'number', `MQTT 5 CONNACKs advertise a Receive Maximum (${String(advertised)})`)
  const max = advertised ?? DEFAULT_RECEIVE_MAXIMUM
  const mayKeep = max * PAYLOAD * CLIENTS
  const growth = peak - baseRss
  const sent = rounds.reduce((n, r) => n + r.sent, 0)
  t.comment(`${rounds.length} connections, ${sent} QoS 2 PUBLISHes (${mib(sent * PAYLOAD)}) in ${ATTACK_MS / 1000} s; Receive Maximum ${max}; broker RSS ${mib(baseRss)} -> peak ${mib(peak)} (+${mib(growth)})`)
  t.same(rounds.filter((r) => r.connack !== 0).map((r) => `client ${r.client} v${r.version}: ${r.connack}`), [], 'every login accepted')
  for (let k = 0; k < CLIENTS; k++) {
    const mine = rounds.filter((r) => r.client === k && r.connack === 0)
    const v = k % 2 === 0 ? 5 : 4
    t.ok(mine.some((r) => r.closedByBroker), `client ${k} (v${v}) was disconnected by the broker (${mine.filter((r) => r.closedByBroker).length} of ${mine.length} connections)`)
  }
  // Each connection the broker ended: MQTT 5, exactly the Receive Maximum acknowledged, then
  // DISCONNECT 0x93; 3.1.1, closed (aedes destroys the socket, so PUBRECs still unwritten are lost).
  const wrong = rounds.filter((r) => r.connack === 0 && (r.pubrecs > max || (r.closedByBroker && r.version === 5 && (r.pubrecs !== max || r.disconnect !== 0x93))))
  t.same(wrong.slice(0, 8).map((r) => `client ${r.client} v${r.version}: ${r.sent} sent, ${r.pubrecs} PUBRECs, ${r.closedByBroker ? `closed by the broker${r.disconnect === undefined ? '' : ` after DISCONNECT 0x${r.disconnect.toString(16)}`}` : 'still open at the end'}`), [],
    `every connection got at most ${max} PUBRECs; MQTT 5: exactly ${max}, then DISCONNECT 0x93; 3.1.1: closed (${wrong.length} did not)`)
  t.ok(growth < RSS_BOUND, `broker RSS grew ${mib(growth)} during the attack, under ${mib(RSS_BOUND)} (${max} x ${PAYLOAD / KIB} KiB x ${CLIENTS} clients = ${mib(mayKeep)} may be kept)`)
  t.not(during, undefined, 'the broker answered the mid-attack GC')
  if (during !== undefined) {
    const held = kept(during) - kept(base)
    t.comment(`a full GC ${(ATTACK_MS - 2000) / 1000} s into the attack: heap ${mib(during.heapUsed)}, outside the heap ${mib(during.external)}`)
    // A kept payload is a slice of the TLS record it arrived in and may pin twice its size.
    t.ok(held <= 2 * mayKeep + KEPT_MARGIN, `mid-attack (attackers paused) the broker kept ${mib(held)} over the baseline, within twice ${mib(mayKeep)} + ${mib(KEPT_MARGIN)}`)
  }

  t.ok(await until(10_000, async () => await connected() === 0), 'every attacking client is gone')
  const after = await settle(kept(base), KEPT_MARGIN, 8000)
  t.comment(`after a full GC: heap ${mib(base.heapUsed)} -> ${mib(after.heapUsed)}, outside the heap ${mib(base.external)} -> ${mib(after.external)}, RSS ${mib(base.rss)} -> ${mib(after.rss)}`)
  t.ok(kept(after) <= kept(base) + KEPT_MARGIN, `heap + external ${mib(kept(after))} within ${mib(KEPT_MARGIN)} of the baseline ${mib(kept(base))}`)
})

// The client id is the key of inbound QoS 2 state: an id that ever sent a QoS 2 PUBLISH or a
// PUBREL must not stay behind once its session is gone, however the flow ended. Long client ids
// (48 KiB, within the 64 KiB packet limit) make what an id leaves measurable; a control run
// with QoS 1 says what a login costs by itself.
t.test('a client id that used QoS 2 leaves nothing behind once its session ends', async (t) => {
  const ID_BYTES = 48 * KIB
  const PER_WAY = 96
  const topic = 'metrics/ids/Temperatura'
  const ways: Record<string, (c: RawMqtt) => Promise<void>> = {
    'QoS 1 (control)': async (c) => {
      c.send({ cmd: 'publish', topic, payload: 'x', qos: 1, messageId: 1, retain: false, dup: false })
      await c.until((p) => p.cmd === 'puback', 5000)
      c.send({ cmd: 'disconnect' })
    },
    'QoS 2 completed': async (c) => {
      c.send({ cmd: 'publish', topic, payload: 'x', qos: 2, messageId: 1, retain: false, dup: false })
      await c.until((p) => p.cmd === 'pubrec', 5000)
      c.send({ cmd: 'pubrel', messageId: 1 })
      await c.until((p) => p.cmd === 'pubcomp', 5000)
      c.send({ cmd: 'disconnect' })
    },
    'a PUBREL alone': async (c) => {
      c.send({ cmd: 'pubrel', messageId: 1 })
      await c.until((p) => p.cmd === 'pubcomp', 5000)
      c.send({ cmd: 'disconnect' })
    },
    'QoS 2 without PUBREL, then dropped': async (c) => {
      c.send({ cmd: 'publish', topic, payload: 'x', qos: 2, messageId: 1, retain: false, dup: false })
      await c.until((p) => p.cmd === 'pubrec', 5000)
    },
    // The session ends while the PUBLISH is still being handled.
    'QoS 2 and the socket closed at once': async (c) => {
      c.send({ cmd: 'publish', topic, payload: 'x', qos: 2, messageId: 1, retain: false, dup: false })
      c.socket.end()
      await c.closed(5000)
    }
  }
  let serial = 0
  const run = async (way: (c: RawMqtt) => Promise<void>, version: 4 | 5): Promise<string[]> => {
    const refused: string[] = []
    for (let i = 0; i < PER_WAY; i += 12) {
      await Promise.all(Array.from({ length: 12 }, async () => {
        const clientId = `${serial++}-`.padEnd(ID_BYTES, 'i')
        const { c, connack } = await rawLogin({ port: broker.port, ca }, version, { clientId, ...login('ids') })
        if (connackCode(connack) !== 0) refused.push(describe(connack))
        else await way(c)
        c.destroy()
      }))
    }
    return refused
  }
  await run(ways['QoS 1 (control)'] as (c: RawMqtt) => Promise<void>, 5)
  t.ok(await until(5000, async () => await connected() === 0), 'warm-up clients gone')
  for (const version of [5, 4] as const) {
    let before = kept(await settle(0, 0, 5000))
    let control = 0
    for (const [name, way] of Object.entries(ways)) {
      const refused = await run(way, version)
      t.same(refused, [], `${name} (v${version}): ${PER_WAY} logins with ${ID_BYTES / KIB} KiB client ids accepted`)
      await until(5000, async () => await connected() === 0)
      const after = await settle(before + control, MIB, 5000)
      const grew = kept(after) - before
      if (name.includes('control')) control = Math.max(0, grew)
      else t.ok(grew <= control + MIB, `${name} (v${version}): ${PER_WAY} client ids kept ${mib(grew)} (the control: ${mib(control)}; ${mib(PER_WAY * ID_BYTES)} if each id stayed)`)
      before = kept(after)
    }
  }
  t.equal(broker.exited(), undefined, 'the broker process is still running')
})
