// MQTT 5 / 3.1.1 protocol core (issue 11): flow control both ways, the client's Maximum Packet
// Size, session resume, Subscription Identifiers, DISCONNECT Session Expiry, inbound QoS 2
// state on Clean Start, empty client ids, keepalive 0 and the will PUBLISH. Over real TLS;
// where a strict independent MQTT 5 client matters, Debian's python3-paho-mqtt is the peer.
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import t from 'tap'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import mqttPacket from 'mqtt-packet'
import type { Client } from 'aedes'
import { parseConfig } from '../../src/config/schema.js'
import { events, PASSWORD, pubackCode, startHarness, type Harness } from '../helpers/harness.js'
import { closesWithin, rawClient, rawTls, until, type RawClient } from '../helpers/limits.js'

const noReplay = { totp: { replayProtection: false } }
const PAHO = join(process.cwd(), 'test', 'fixtures', 'protocol_core_paho.py')

// One broker for everything that needs no special limits; sessions may outlive connections.
// Client ids are not owned here: a freed id taken by another user is what some tests check.
const h = await startHarness({ sessions: { maxExpiry: 300 }, auth: { ...noReplay, clientIdBinding: 'none' } })
// Clients a failed assertion left open go first, then the broker and its folder.
const opened: MqttClient[] = []
const raws: RawClient[] = []
t.teardown(async () => {
  for (const r of raws) r.socket.destroy()
  await Promise.all(opened.map(async (c) => await c.endAsync(true).catch(() => {})))
  await h.close()
})
const secrets = new Map<string, string>()
for (const u of ['rm', 'mps', 'sid', 'wl', 'res', 'perr', 'q2u', 'q2v', 'e8', 'adv', 'cap']) secrets.set(u, await h.addUser(u))

interface Opened { c: MqttClient; connack: any; messages: Array<{ topic: string; payload: string; packet: any }> }

/** An mqtt.js client that records every message from the moment it connects (queued ones included). */
function open (hh: Harness, user: string, opts: IClientOptions = {}): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({
      host: '127.0.0.1', port: hh.port, protocol: 'mqtts', ca: hh.ca, servername: 'localhost', rejectUnauthorized: true,
      reconnectPeriod: 0, connectTimeout: 10000, protocolVersion: 5, username: `${user}|${hh.code(user)}`, password: PASSWORD, ...opts
    })
    opened.push(c)
    const messages: Opened['messages'] = []
    c.on('message', (topic, payload, packet) => messages.push({ topic, payload: payload.toString(), packet }))
    c.once('connect', (connack) => resolve({ c, connack, messages }))
    c.once('error', reject)
  })
}

/**
 * A broker of its own for one test. The limits are parsed first: a config the broker refuses
 * fails here, before startHarness has made a folder it would not remove.
 */
async function startTuned (limits: Record<string, unknown>): Promise<Harness> {
  parseConfig({ limits }, '/srv')
  return await startHarness({ limits, auth: noReplay })
}

/** The broker's live client with this id (aedes keeps them in `clients`, not in its types). */
function connectedClient (id: string): Client | undefined {
  return (h.bastion.broker as unknown as { clients: Record<string, Client> }).clients[id]
}

/** Drops the TCP connection under the client: no DISCONNECT reaches the broker. */
function drop (c: MqttClient): void {
  (c as any).stream.destroy()
}

/** A raw mqtt-packet client logged in as `user` (MQTT 5 unless `protocolVersion` says otherwise). */
async function raw (hh: Harness, user: string, connect: Record<string, unknown> = {}): Promise<RawClient> {
  const r = await rawClient(hh, { username: `${user}|${hh.code(user)}`, password: Buffer.from(PASSWORD), ...connect })
  raws.push(r)
  return r
}

function qos2 (topic: string, messageId: number, payload: string): any {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos: 2, messageId, retain: false, dup: false }
}

interface PahoRun { ready: Promise<boolean>; go: () => void; result: Promise<{ code: number | null; out: any; stderr: string }> }

/** Starts the paho fixture in `mode`; it prints READY once subscribed and reports after GO. */
function paho (tt: { teardown: (fn: () => void) => void }, mode: string, user: string, clientId: string): PahoRun {
  const child = spawn('/usr/bin/python3', [PAHO, mode, '127.0.0.1', String(h.port), join(h.dir, 'certs', 'ca.crt'), user, PASSWORD, secrets.get(user) as string, clientId], { stdio: ['pipe', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  let onReady: (ok: boolean) => void = () => {}
  const ready = new Promise<boolean>((resolve) => { onReady = resolve })
  // The fixture bounds its own waits (20 s); this is the last resort.
  const killer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('READY\n')) onReady(true) })
  child.stderr.on('data', (d: Buffer) => { err += d.toString() })
  child.stdin.on('error', () => {})
  const result = new Promise<{ code: number | null; out: any; stderr: string }>((resolve) => {
    child.on('close', (code) => {
      clearTimeout(killer)
      onReady(false)
      let json: any
      try { json = JSON.parse(out.trim().split('\n').at(-1) ?? '') } catch { json = undefined }
      resolve({ code, out: json, stderr: err })
    })
  })
  tt.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  return { ready, go: () => child.stdin.end('GO\n'), result }
}

t.test('a v5 subscriber with Receive Maximum 2 gets at most 2 unacknowledged QoS 1 PUBLISHes, and all 5 in order once it acknowledges (paho)', async (t) => {
  const p = paho(t, 'receive-max', 'rm', 'paho-rm')
  t.ok(await p.ready, 'paho connected with Receive Maximum 2 and subscribed')
  const pub = await open(h, 'rm', { clientId: 'rm-pub' })
  for (let i = 1; i <= 5; i++) t.equal(await pubackCode(pub.c, 'metrics/rm/Temperatura', String(i)), 0, `publish ${i} accepted`)
  p.go()
  const r = await p.result
  t.equal(r.code, 0, `paho finished: ${r.stderr}`)
  t.same(r.out?.errors, [], 'paho saw no protocol error')
  t.ok(r.out?.beforeRelease <= 2, `no more than 2 PUBLISHes while none was acknowledged (got ${r.out?.beforeRelease})`)
  t.equal(r.out?.beforeRelease, 2, 'and the window was used: exactly 2')
  t.same(r.out?.received.map((m: any) => m.payload), ['1', '2', '3', '4', '5'], 'after the PUBACKs the rest arrive, in order, all 5')
  t.equal(r.out?.disconnect, null, 'paho was never disconnected')
  await pub.c.endAsync()
})

t.test('the broker advertises Receive Maximum 32 in its CONNACK by default', async (t) => {
  const { c, connack } = await open(h, 'adv')
  t.equal(connack.properties?.receiveMaximum, 32)
  await c.endAsync()
})

t.test('past a Receive Maximum of 4 unreleased QoS 2 PUBLISHes a v5 client gets DISCONNECT 0x93, a 3.1.1 client is closed, and it is logged', async (t) => {
  const h4 = await startTuned({ receiveMaximum: 4 })
  t.teardown(() => h4.close())
  await h4.addUser('bob')
  const watch = await open(h4, 'bob', { clientId: 'bob-watch' })
  t.equal(watch.connack.properties?.receiveMaximum, 4, 'the configured value is advertised')
  await watch.c.subscribeAsync('metrics/bob/Temperatura', { qos: 2 })

  const v5 = await raw(h4, 'bob', { clientId: 'bob-v5' })
  t.equal((await v5.next('connack') as any)?.reasonCode, 0)
  for (let id = 1; id <= 4; id++) v5.send(qos2('metrics/bob/Temperatura', id, `m${id}`))
  for (let id = 1; id <= 4; id++) t.equal((await v5.next('pubrec'))?.messageId, id, `PUBREC ${id}`)
  t.equal(await v5.next('disconnect', 300), undefined, '4 in flight are within the window')
  // Completing one frees one slot: the window counts what is in flight, not a total.
  v5.send({ cmd: 'pubrel', messageId: 1 } as any)
  t.equal((await v5.next('pubcomp'))?.messageId, 1, 'PUBCOMP 1')
  v5.send(qos2('metrics/bob/Temperatura', 5, 'm5'))
  t.equal((await v5.next('pubrec'))?.messageId, 5, 'the freed slot is used by 5')
  v5.send(qos2('metrics/bob/Temperatura', 6, 'm6'))
  const disconnect = await v5.next('disconnect', 3000) as any
  t.equal(disconnect?.reasonCode, 0x93, 'DISCONNECT 0x93 Receive Maximum exceeded')
  t.ok(await v5.closed(3000), 'then the socket is closed')
  t.notOk(v5.packets.some((p) => p.cmd === 'pubrec' && (p as any).messageId === 6), 'no PUBREC for the excess one')
  await until(1000, () => watch.messages.length >= 5)
  t.notOk(watch.messages.some((m) => m.payload === 'm6'), 'the excess message is not published')
  const logged = events(h4, 'limit.receive_maximum')
  t.ok(logged.length >= 1, 'the refusal is logged by the limit reporter')
  t.match(logged[0], { remote: '127.0.0.1' })

  // Counted as the packets arrive, not as their handling completes: a PUBLISH sent while the
  // window is full is refused even when a PUBREL right behind it in the same read would be
  // handled first (aedes handles the packets of one read concurrently; the PUBLISH waits for its
  // authorization). Counting at completion let Paho's test_flow_control2 through.
  const order = await raw(h4, 'bob', { clientId: 'bob-order' })
  t.equal((await order.next('connack') as any)?.reasonCode, 0)
  for (let id = 1; id <= 4; id++) order.send(qos2('metrics/bob/Temperatura', id, `o${id}`))
  for (let id = 1; id <= 4; id++) t.equal((await order.next('pubrec'))?.messageId, id, `PUBREC ${id}`)
  order.socket.write(Buffer.concat([
    mqttPacket.generate(qos2('metrics/bob/Temperatura', 5, 'o5'), { protocolVersion: 5 }),
    mqttPacket.generate({ cmd: 'pubrel', messageId: 1 } as any, { protocolVersion: 5 })
  ]))
  t.equal((await order.next('disconnect', 3000) as any)?.reasonCode, 0x93, 'the fifth PUBLISH, ahead of PUBREL 1, exceeds the window')

  const v4 = await raw(h4, 'bob', { clientId: 'bob-v4', protocolVersion: 4 })
  t.equal((await v4.next('connack') as any)?.returnCode, 0)
  for (let id = 1; id <= 5; id++) v4.send(qos2('metrics/bob/Temperatura', id, `v4-${id}`))
  t.ok(await v4.closed(3000), '3.1.1: the connection is closed')
  t.ok(v4.packets.filter((p) => p.cmd === 'pubrec').length <= 4, 'with at most 4 PUBRECs')
})

t.test('a PUBLISH larger than the subscriber\'s Maximum Packet Size 200 is not sent; the small ones before and after are, and it stays connected (paho)', async (t) => {
  const p = paho(t, 'packet-size', 'mps', 'paho-mps')
  t.ok(await p.ready, 'paho connected with Maximum Packet Size 200 and subscribed')
  const pub = await open(h, 'mps', { clientId: 'mps-pub' })
  t.equal(await pubackCode(pub.c, 'metrics/mps/Temperatura', 'small-before'), 0)
  t.equal(await pubackCode(pub.c, 'metrics/mps/Temperatura', 'x'.repeat(500)), 0, 'the large message is accepted from the publisher')
  t.equal(await pubackCode(pub.c, 'metrics/mps/Temperatura', 'small-after'), 0)
  p.go()
  const r = await p.result
  t.equal(r.code, 0, `paho finished: ${r.stderr}`)
  t.same(r.out?.errors, [])
  const got = r.out?.received ?? []
  t.same(got.map((m: any) => m.payload.length > 20 ? `${m.length} bytes` : m.payload), ['small-before', 'small-after'], 'only the small ones arrive, in order')
  t.ok(got.every((m: any) => m.wire <= 200), `no PUBLISH over 200 bytes on the wire (${got.map((m: any) => m.wire).join(', ')})`)
  t.equal(r.out?.disconnect, null, 'no DISCONNECT')
  t.equal(r.out?.connected, true, 'still connected at the end')
  await pub.c.endAsync()
})

t.test('Clean Start 0 without a Session Expiry property resumes the session: session present and the queued message delivered', async (t) => {
  const first = await open(h, 'res', { clientId: 'res-1', clean: true, properties: { sessionExpiryInterval: 60 } })
  await first.c.subscribeAsync('metrics/res/Temperatura', { qos: 1 })
  await first.c.endAsync()
  t.ok(await until(2000, () => connectedClient('res-1') === undefined), 'the first connection is gone')
  const pub = await open(h, 'res', { clientId: 'res-pub' })
  t.equal(await pubackCode(pub.c, 'metrics/res/Temperatura', 'while away'), 0)
  const again = await open(h, 'res', { clientId: 'res-1', clean: false })
  t.equal(again.connack.sessionPresent, true, 'CONNACK session present = 1')
  t.ok(await until(2000, () => again.messages.length > 0), 'a message arrives')
  t.same(again.messages.map((m) => m.payload), ['while away'], 'the queued message is delivered')
  await again.c.endAsync()
  await pub.c.endAsync()
})

t.test('a message matching subscriptions with identifiers 1 and 2 is delivered once carrying both (paho)', async (t) => {
  const p = paho(t, 'sub-ids', 'sid', 'paho-sid')
  t.ok(await p.ready, 'paho subscribed twice')
  const pub = await open(h, 'sid', { clientId: 'sid-pub' })
  t.equal(await pubackCode(pub.c, 'metrics/sid/Temperatura', 'both'), 0)
  p.go()
  const r = await p.result
  t.equal(r.code, 0, `paho finished: ${r.stderr}`)
  t.same(r.out?.suback, [1, 1], 'both subscriptions granted QoS 1')
  t.same(r.out?.errors, [])
  const got = r.out?.received ?? []
  t.equal(got.length, 1, 'delivered once')
  t.same([...(got[0]?.subscriptionIdentifiers ?? [])].sort(), [1, 2], `carrying identifiers 1 and 2 (got ${JSON.stringify(got.map((m: any) => m.subscriptionIdentifiers))})`)
  await pub.c.endAsync()
})

t.test('a non-zero Session Expiry on DISCONNECT after CONNECT with 0 is a protocol error: the will is published and no session is kept', async (t) => {
  const watch = await open(h, 'perr', { clientId: 'perr-watch' })
  await watch.c.subscribeAsync('metrics/perr/Estado', { qos: 1 })
  const c = await raw(h, 'perr', { clientId: 'perr-1', clean: true, will: { topic: 'metrics/perr/Estado', payload: Buffer.from('gone'), qos: 1, retain: false } })
  t.equal((await c.next('connack') as any)?.reasonCode, 0)
  c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'metrics/perr/Temperatura', qos: 1 }] } as any)
  t.ok(await c.next('suback'), 'subscribed: there is session state to keep or not')
  c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 300 } } as any)
  t.ok(await c.closed(3000), 'the broker closes the connection')
  const answer = c.packets.find((p) => p.cmd === 'disconnect') as any
  if (answer !== undefined) t.equal(answer.reasonCode, 0x82, 'a DISCONNECT it sent says 0x82 Protocol Error')
  t.ok(await until(3000, () => watch.messages.length > 0), 'a message reaches the will topic')
  t.same(watch.messages.map((m) => m.payload), ['gone'], 'the will is published: a protocol error is not a normal disconnect')
  t.ok(await until(2000, () => connectedClient('perr-1') === undefined))
  const again = await raw(h, 'perr', { clientId: 'perr-1', clean: false })
  t.equal((await again.next('connack') as any)?.sessionPresent, false, 'a Clean Start 0 reconnect finds no session')
  again.socket.destroy()
  await watch.c.endAsync()
})

t.test('a Session Expiry on DISCONNECT is capped to sessions.maxExpiry', async (t) => {
  // The main broker's cap is 300 s (a broker of its own with 60 s would cost a start-up).
  let gone: Client | undefined
  const watch = (client: Client): void => { if (client.id === 'cap-1') gone = client }
  h.bastion.broker.on('clientDisconnect', watch)
  t.teardown(() => { h.bastion.broker.off('clientDisconnect', watch) })
  const c = await raw(h, 'cap', { clientId: 'cap-1', clean: true, properties: { sessionExpiryInterval: 30 } })
  t.equal((await c.next('connack') as any)?.reasonCode, 0)
  c.send({ cmd: 'disconnect', reasonCode: 0, properties: { sessionExpiryInterval: 100000 } } as any)
  t.ok(await c.closed(3000), 'closed')
  t.ok(await until(2000, () => gone !== undefined), 'the broker let the client go')
  t.equal(gone?.sessionExpiryInterval, 300, 'the session is kept at most sessions.maxExpiry (300 s), not 100000 s')
})

t.test('inbound QoS 2 state is discarded on Clean Start: the same packet id is a new message, also for another user of the client id', async (t) => {
  const watchU = await open(h, 'q2u', { clientId: 'q2u-watch' })
  await watchU.c.subscribeAsync('metrics/q2u/Temperatura', { qos: 2 })
  const watchV = await open(h, 'q2v', { clientId: 'q2v-watch' })
  await watchV.c.subscribeAsync('metrics/q2v/Temperatura', { qos: 2 })
  const gone = (id: string): Promise<boolean> => until(2000, () => connectedClient(id) === undefined)

  for (const protocolVersion of [5, 4]) {
    const id = `q2-x-v${protocolVersion}`
    const first = await raw(h, 'q2u', { clientId: id, protocolVersion })
    t.equal((await first.next('connack') as any)?.sessionPresent, false)
    first.send(qos2('metrics/q2u/Temperatura', 7, `first-v${protocolVersion}`))
    t.equal((await first.next('pubrec'))?.messageId, 7, `v${protocolVersion}: PUBREC 7`)
    first.socket.destroy() // no PUBREL
    t.ok(await gone(id))
    const second = await raw(h, 'q2u', { clientId: id, protocolVersion, clean: true })
    t.equal((await second.next('connack') as any)?.sessionPresent, false)
    second.send(qos2('metrics/q2u/Temperatura', 7, `second-v${protocolVersion}`))
    t.equal((await second.next('pubrec'))?.messageId, 7)
    second.send({ cmd: 'pubrel', messageId: 7 } as any)
    t.equal((await second.next('pubcomp'))?.messageId, 7)
    t.ok(await until(2000, () => watchU.messages.some((m) => m.payload === `second-v${protocolVersion}`)), `v${protocolVersion}: the new message with packet id 7 is delivered`)
    second.socket.end()
    t.ok(await gone(id))
  }

  const u = await raw(h, 'q2u', { clientId: 'q2-shared' })
  t.equal((await u.next('connack') as any)?.reasonCode, 0)
  u.send(qos2('metrics/q2u/Temperatura', 7, 'from-u'))
  t.equal((await u.next('pubrec'))?.messageId, 7)
  u.socket.destroy()
  t.ok(await gone('q2-shared'))
  const v = await raw(h, 'q2v', { clientId: 'q2-shared', clean: true })
  t.equal((await v.next('connack') as any)?.reasonCode, 0, 'user V may take the free client id')
  v.send(qos2('metrics/q2v/Temperatura', 7, 'from-v'))
  t.equal((await v.next('pubrec'))?.messageId, 7)
  v.send({ cmd: 'pubrel', messageId: 7 } as any)
  t.equal((await v.next('pubcomp'))?.messageId, 7)
  t.ok(await until(2000, () => watchV.messages.some((m) => m.payload === 'from-v')), 'user V\'s message with packet id 7 is delivered')
  v.socket.destroy()
  await watchU.c.endAsync()
  await watchV.c.endAsync()
})

t.test('a 3.1.1 CONNECT with an empty client id and CleanSession 0 is refused with return code 2', async (t) => {
  // mqtt.js and mqtt-packet both refuse to build this CONNECT: built with CleanSession 1, the
  // flag is cleared in the bytes (fixed header, remaining length, "MQTT", level, flags).
  const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: '', keepalive: 30, username: `e8|${h.code('e8')}`, password: Buffer.from(PASSWORD) } as any)
  const flags = 1 + (bytes[1] as number < 128 ? 1 : 2) + 7
  t.equal((bytes[flags] as number) & 0x02, 0x02, 'found the CleanSession flag')
  bytes[flags] = (bytes[flags] as number) & ~0x02
  const socket = await rawTls(h)
  t.teardown(() => { socket.destroy() })
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const got: any[] = []
  parser.on('packet', (p) => got.push(p))
  socket.on('data', (b: Buffer) => parser.parse(b))
  socket.write(bytes)
  t.ok(await closesWithin(socket, 3000), 'the connection is closed')
  t.equal(got[0]?.cmd, 'connack', 'after a CONNACK')
  t.equal(got[0]?.returnCode, 2, 'identifier rejected')
  socket.destroy()
  // With CleanSession 1 the same empty id is fine.
  const ok = await raw(h, 'e8', { protocolVersion: 4, clientId: '', clean: true })
  t.equal((await ok.next('connack') as any)?.returnCode, 0, 'CleanSession 1 with an empty id is accepted')
  ok.socket.destroy()
})

t.test('limits.maxKeepAlive 0 means no cap: a 3.1.1 client with keepalive 0 is accepted and v5 is told no Server Keep Alive', async (t) => {
  const hk = await startTuned({ maxKeepAlive: 0 })
  t.teardown(() => hk.close())
  await hk.addUser('ka')
  const v4 = await open(hk, 'ka', { clientId: 'ka-v4', protocolVersion: 4, keepalive: 0 })
  t.equal(v4.connack.returnCode, 0, '3.1.1 keepalive 0 accepted')
  const long = await open(hk, 'ka', { clientId: 'ka-long', protocolVersion: 4, keepalive: 65535 })
  t.equal(long.connack.returnCode, 0, '3.1.1 keepalive 65535 accepted')
  const v5 = await open(hk, 'ka', { clientId: 'ka-v5', keepalive: 0 })
  t.equal(v5.connack.reasonCode, 0)
  t.equal(v5.connack.properties?.serverKeepAlive, undefined, 'no Server Keep Alive imposed')
  t.equal(events(hk, 'limit.keepalive').length, 0, 'no keepalive refusal logged')
  for (const c of [v4, long, v5]) await c.c.endAsync()
})

t.test('the will PUBLISH carries no Will Delay Interval, with a delay of 0 or of 1 s (paho)', async (t) => {
  const p = paho(t, 'will', 'wl', 'paho-wl')
  t.ok(await p.ready, 'paho subscribed to metrics/wl/Estado')
  const now = await open(h, 'wl', { clientId: 'wl-0', will: { topic: 'metrics/wl/Estado', payload: Buffer.from('will-0'), qos: 1, retain: false, properties: { willDelayInterval: 0 } } })
  drop(now.c)
  const later = await open(h, 'wl', { clientId: 'wl-1', properties: { sessionExpiryInterval: 5 }, will: { topic: 'metrics/wl/Estado', payload: Buffer.from('will-1'), qos: 1, retain: false, properties: { willDelayInterval: 1 } } })
  drop(later.c)
  p.go()
  const r = await p.result
  t.equal(r.code, 0, `paho finished: ${r.stderr}`)
  t.same(r.out?.errors, [], 'paho found no protocol error in the will PUBLISHes')
  t.equal(r.out?.disconnect, null, 'paho stayed connected')
  const got = r.out?.received ?? []
  t.same(got.map((m: any) => m.payload).sort(), ['will-0', 'will-1'], 'both wills delivered')
  t.ok(got.every((m: any) => !('WillDelayInterval' in (m.properties ?? {}))), 'none carries a Will Delay Interval')
})

t.test('a refused QoS 1 PUBLISH gets PUBACK 0x87 alone, without a Reason String (as Mosquitto; the Paho harness cannot parse one)', async (t) => {
  const r = await raw(h, 'adv', { clientId: 'adv-denied' })
  t.equal((await r.next('connack') as any)?.reasonCode, 0)
  r.send({ cmd: 'publish', topic: 'metrics/someone-else/Temperatura', payload: Buffer.from('x'), qos: 1, messageId: 9, retain: false, dup: false } as any)
  const puback = await r.next('puback') as any
  t.equal(puback?.reasonCode, 0x87)
  t.equal(puback?.properties?.reasonString, undefined, 'no Reason String')
  t.ok(events(h, 'acl.denied').some((l) => l.clientId === 'adv-denied'), 'the refusal is logged')
  r.socket.destroy()
})
