// One load-generator thread: raw node:tls sockets speaking MQTT 3.1.1 (wire.mjs). The main
// thread (generator.mjs) gives each worker its share of the clients and drives it with
// commands; every command answers once with a result. A publisher and its subscriber always
// live in the same worker, so end-to-end flow control and latency use one thread's clock.
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import { parentPort, workerData } from 'node:worker_threads'
import { DISCONNECT, TYPE, connectPacket, frameReader, publishTemplate, readPublish, subscribePacket, writePuback } from './wire.mjs'

const { host, port, servername, ca } = workerData
// One context for every socket: building one per connection would parse the CA each time and
// bill the generator for it. TLS 1.3 only; no session is ever passed to tls.connect, so every
// connection is a full handshake (no resumption).
const context = tls.createSecureContext({ ca, minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3' })
const PAYLOAD = 64
const CONNECT_TIMEOUT_MS = 30_000
let tlsInfo // the suite and key exchange of the first connection, for the report

/**
 * Opens a TLS connection, sends CONNECT and resolves with the client once CONNACK 0 arrives;
 * rejects with a short reason otherwise. Later packets go to `client.onPacket`, and
 * `client.afterData` runs after each chunk (where batched replies are written). A credential
 * with a `port` dials that port instead of the generator's (bench/cluster: subscribers on node B).
 */
function dial ({ clientId, username, password, port: to = port }) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const socket = tls.connect({ host, port: to, servername, secureContext: context, minVersion: 'TLSv1.3' })
    const client = { socket, clientId, onPacket: null, afterData: null, closed: false, ms: 0 }
    let settled = false
    const fail = (why) => {
      if (settled) return
      settled = true; clearTimeout(timer); socket.destroy(); reject(new Error(why))
    }
    const timer = setTimeout(() => fail('timeout'), CONNECT_TIMEOUT_MS)
    socket.setNoDelay(true)
    socket.once('secureConnect', () => {
      if (tlsInfo === undefined) {
        const k = socket.getEphemeralKeyInfo()
        tlsInfo = { protocol: socket.getProtocol(), cipher: socket.getCipher().standardName, group: k?.name ?? k?.type }
      }
      socket.write(connectPacket({ clientId, username, password }))
    })
    socket.on('error', (err) => fail(err.code ?? err.message))
    socket.on('close', () => { client.closed = true; fail('closed before CONNACK') })
    const feed = frameReader((type, flags, body) => {
      if (settled) { client.onPacket?.(type, flags, body); return }
      if (type !== TYPE.CONNACK) return fail(`packet type ${type} before CONNACK`)
      if (body[1] !== 0) return fail(`CONNACK ${body[1]}`)
      settled = true; clearTimeout(timer); client.ms = performance.now() - t0; resolve(client)
    })
    socket.on('data', (chunk) => { feed(chunk); client.afterData?.() })
  })
}

/** Sends DISCONNECT and closes; resolves when the socket is gone (or after 5 s). */
function hangUp (client) {
  if (client.closed) return Promise.resolve()
  return new Promise((resolve) => {
    const t = setTimeout(() => { client.socket.destroy(); resolve() }, 5000)
    client.socket.once('close', () => { clearTimeout(t); resolve() })
    client.socket.end(DISCONNECT)
  })
}

/** Runs `fn` over `items` with at most `limit` at a time; collects ok counts and failure reasons. */
async function pool (items, limit, fn) {
  const failed = {}
  let ok = 0; let next = 0
  async function lane () {
    while (next < items.length) {
      const item = items[next++]
      try { await fn(item); ok++ } catch (err) { failed[err.message] = (failed[err.message] ?? 0) + 1 }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane))
  return { ok, failed }
}

// ---- idle connections and connect/disconnect cycles -----------------------------------------

let idle = []

async function openIdle ({ creds, concurrency }) {
  const ms = []
  const r = await pool(creds, concurrency, async (cred) => { const c = await dial(cred); idle.push(c); ms.push(c.ms) })
  return { ...r, ms }
}

async function closeIdle () {
  await Promise.all(idle.map(hangUp))
  idle = []
  return {}
}

/** Full TLS handshake, CONNECT, CONNACK, DISCONNECT, close: once per credential. */
async function connects ({ creds, concurrency }) {
  const ms = []
  const r = await pool(creds, concurrency, async (cred) => {
    const c = await dial(cred)
    ms.push(c.ms)
    await hangUp(c)
  })
  return { ...r, ms }
}

// ---- publisher -> subscriber pairs ---------------------------------------------------------

let pairs = []
let load = null // the running load: { qos, window, rate, epoch, startedAt }
let epoch = 0 // stamped in each payload, so stragglers of a previous load are not counted
let latencies = []
let tick = null

async function openPairs ({ list }) {
  const failed = {}
  pairs = list.map((p) => ({ ...p, pub: null, sub: null, sent: 0, unacked: 0, acked: 0, delivered: 0, highSeq: 0, nextId: 1, lastProgress: 0, stalls: 0 }))
  const note = (err) => { failed[err.message] = (failed[err.message] ?? 0) + 1 }
  // Publishers first, subscribers after: with TOTP logins the subscriber of a pair uses the same
  // user's next code, and a code older than the last one claimed would be refused as a replay.
  await Promise.all(pairs.map(async (p) => { p.pub = await dial(p.pubCred).catch(note) }))
  await Promise.all(pairs.map(async (p) => {
    if (!p.pub) return
    try {
      p.sub = await dial(p.subCred)
      await new Promise((resolve, reject) => {
        p.sub.onPacket = (type, flags, body) => {
          if (type !== TYPE.SUBACK) return
          body[2] < 0x80 ? resolve() : reject(new Error(`SUBACK 0x${body[2].toString(16)}`))
        }
        p.sub.socket.write(subscribePacket(p.filter, 1))
      })
    } catch (err) { note(err) }
  }))
  pairs = pairs.filter((p) => p.pub && p.sub)
  for (const p of pairs) wirePair(p)
  return { ok: pairs.length, failed, tls: tlsInfo }
}

function wirePair (p) {
  p.templates = [publishTemplate(p.topic, 0, PAYLOAD), publishTemplate(p.topic, 1, PAYLOAD)]
  p.pub.onPacket = (type) => { if (type === TYPE.PUBACK) { p.unacked--; p.acked++ } }
  p.pub.afterData = () => pump(p)
  let acks = null; let nAcks = 0
  p.sub.onPacket = (type, flags, body) => {
    if (type !== TYPE.PUBLISH) return
    const { qos, id, payload } = readPublish(flags, body)
    if (qos === 1) {
      // Acknowledge in one write per chunk, as a real client's socket would coalesce them.
      if (acks === null) acks = Buffer.allocUnsafe(4 * 64)
      if (nAcks * 4 === acks.length) { const b = Buffer.allocUnsafe(acks.length * 2); acks.copy(b); acks = b }
      writePuback(acks, 4 * nAcks++, id)
    }
    if (load === null || payload.readUInt32LE(4) !== load.epoch) return
    const seq = payload.readUInt32LE(0)
    p.delivered++
    if (seq > p.highSeq) { p.highSeq = seq; p.lastProgress = performance.now() }
    if (load.rate > 0) latencies.push(performance.now() - payload.readDoubleLE(8))
  }
  p.sub.afterData = () => {
    if (nAcks > 0) { p.sub.socket.write(Buffer.from(acks.subarray(0, 4 * nAcks))); nAcks = 0 }
    pump(p)
  }
}

/**
 * Sends what the pair may send now. In flight = max(PUBLISHes not yet acknowledged, messages
 * not yet delivered to the subscriber), at most `window`: so QoS 0 is flow-controlled end to
 * end too, and no broker ever holds more than `window` messages of one pair in its queues (which
 * keeps Mosquitto's max_queued_messages and our limits.maxQueuedBytes out of the picture).
 */
function pump (p) {
  if (load === null || load.stopping) return
  const inFlight = Math.max(p.unacked, p.sent - p.highSeq)
  let n = load.window - inFlight
  if (load.rate > 0) n = Math.min(n, Math.floor((performance.now() - load.startedAt) * load.rate / 1000) - p.sent)
  if (n <= 0) return
  const t = p.templates[load.qos]
  const out = Buffer.allocUnsafe(t.size * n)
  for (let i = 0; i < n; i++) {
    const id = p.nextId
    p.nextId = id === 65535 ? 1 : id + 1
    const payload = t.write(out, i * t.size, id)
    payload.writeUInt32LE(++p.sent, 0)
    payload.writeUInt32LE(load.epoch, 4)
    payload.writeDoubleLE(performance.now(), 8)
  }
  if (load.qos === 1) p.unacked += n
  p.pub.socket.write(out)
}

function startLoad ({ qos, window, rate }) {
  epoch++
  latencies = []
  load = { qos, window, rate, epoch, startedAt: performance.now(), stopping: false }
  for (const p of pairs) { p.sent = 0; p.unacked = 0; p.acked = 0; p.delivered = 0; p.highSeq = 0; p.lastProgress = performance.now(); p.stalls = 0 }
  // The timer paces rate-limited loads; at full speed it only unsticks a pair whose last QoS 0
  // messages were dropped (nothing would ever arrive to open its window again).
  tick = setInterval(() => {
    const now = performance.now()
    for (const p of pairs) {
      if (p.sent > p.highSeq && p.unacked === 0 && now - p.lastProgress > 1000) { p.highSeq = p.sent; p.stalls++; p.lastProgress = now }
      pump(p)
    }
  }, rate > 0 ? 2 : 100)
  for (const p of pairs) pump(p)
  return {}
}

function snapshot () {
  const s = { sent: 0, acked: 0, delivered: 0, stalls: 0, latencies }
  for (const p of pairs) { s.sent += p.sent; s.acked += p.acked; s.delivered += p.delivered; s.stalls += p.stalls }
  latencies = []
  return s
}

/** Stops sending and waits (at most 3 s) for what is in flight to be acknowledged and delivered. */
async function stopLoad () {
  load.stopping = true
  const deadline = performance.now() + 3000
  while (performance.now() < deadline && pairs.some((p) => p.unacked > 0 || p.delivered < p.sent)) {
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  clearInterval(tick)
  const s = snapshot()
  load = null
  return { ...s, latencies: undefined, undelivered: s.sent - s.delivered, unacked: pairs.reduce((a, p) => a + p.unacked, 0) }
}

async function closePairs () {
  await Promise.all(pairs.flatMap((p) => [hangUp(p.pub), hangUp(p.sub)]))
  pairs = []
  return {}
}

const commands = { openIdle, closeIdle, connects, openPairs, startLoad, mark: snapshot, stopLoad, closePairs }

parentPort.on('message', async ({ id, cmd, args }) => {
  try {
    parentPort.postMessage({ id, result: await commands[cmd](args ?? {}) })
  } catch (err) {
    parentPort.postMessage({ id, error: err.stack ?? String(err) })
  }
})
