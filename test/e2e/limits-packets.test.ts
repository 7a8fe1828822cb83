// Packet and message limits: packet size, topic length and depth, subscriptions, publish rate, slow consumers.
import t from 'tap'
import mqtt, { type MqttClient } from 'mqtt'
import { events, nextMessage, PASSWORD, pubackCode, startHarness, subackCode, type Harness } from '../helpers/harness.js'
import { rawClient, until } from '../helpers/limits.js'

const noReplay = { totp: { replayProtection: false } }

/** Connects with mqtt.js; resolves with the client and its CONNACK. */
function connectWithConnack (h: Harness, user: string, opts: mqtt.IClientOptions = {}): Promise<{ c: MqttClient; connack: any }> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, protocolVersion: 5, username: `${user}|${h.code(user)}`, password: PASSWORD, ...opts })
    c.once('connect', (connack) => resolve({ c, connack }))
    c.once('error', reject)
  })
}

/** Resolves with the reason code of the server's DISCONNECT, or 'closed' when the socket just closed. */
function kicked (c: MqttClient, ms = 6000): Promise<number | 'closed' | 'timeout'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve('timeout'), ms)
    c.once('disconnect', (packet: any) => { clearTimeout(timer); resolve(packet.reasonCode) })
    c.once('close', () => { setImmediate(() => { clearTimeout(timer); resolve('closed') }) })
  })
}

t.test('Maximum Packet Size is advertised; oversized: MQTT 5 gets DISCONNECT 0x95, 3.1.1 is closed', async (t) => {
  const h = await startHarness({ limits: { maxPacketSize: 1024 }, auth: noReplay })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const { c, connack } = await connectWithConnack(h, 'alice')
  t.equal(connack.properties?.maximumPacketSize, 1024, 'advertised in the CONNACK')
  t.equal(await pubackCode(c, 'metrics/alice/Temperatura', 'x'.repeat(900)), 0, 'a packet under the limit passes')
  const v5 = kicked(c)
  c.publish('metrics/alice/Temperatura', 'x'.repeat(2000), { qos: 1 })
  t.equal(await v5, 0x95)
  t.match(events(h, 'limit.packet_size')[0], { level: 40, remote: '127.0.0.1', max: 1024 })
  t.ok(events(h, 'limit.packet_size')[0].size > 2000)

  const { c: old } = await connectWithConnack(h, 'alice', { protocolVersion: 4 })
  const v4 = kicked(old)
  old.publish('metrics/alice/Temperatura', 'x'.repeat(2000), { qos: 1 })
  t.equal(await v4, 'closed')
})

t.test('a topic or filter too long or too deep is refused like an ACL denial and logged', async (t) => {
  const h = await startHarness({ limits: { maxTopicLength: 24, maxTopicLevels: 3 }, auth: noReplay })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const c = await h.connect('alice')
  t.equal(await pubackCode(c, 'metrics/alice/Temperatura', '1'), 0x87, '25 bytes: PUBACK 0x87')
  t.equal(await pubackCode(c, 'metrics/alice/Humedad', '1'), 0, '21 bytes pass')
  t.equal(await pubackCode(c, 'metrics/alice/a/b', '1'), 0x87, '4 levels: PUBACK 0x87')
  t.equal(await subackCode(c, 'metrics/alice/Temperatura'), 0x87, 'filter of 25 bytes: SUBACK 0x87')
  t.equal(await subackCode(c, 'metrics/alice/+/x'), 0x87, 'filter of 4 levels: SUBACK 0x87')
  t.equal(await subackCode(c, 'metrics/alice/#'), 1, 'a short filter is granted')
  const refused = events(h, 'limit.topic')
  t.match(refused[0], { level: 40, user: 'alice', remote: '127.0.0.1', action: 'publish', length: 25, levels: 3 })
  t.equal(events(h, 'acl.denied').length, 0, 'refused by the limit, before the ACL')
  // Logged at most once a minute per client; every refusal is counted in metrics.
  t.equal(refused.length, 1)

  const old = await h.connect('alice', { protocolVersion: 4 })
  const closed = kicked(old)
  old.publish('metrics/alice/Temperatura', '1', { qos: 1 })
  t.equal(await closed, 'closed', '3.1.1: the connection is closed')
})

t.test('subscriptions past maxSubscriptions get SUBACK 0x87 / 0x80; re-subscribing takes no slot, unsubscribing frees one', async (t) => {
  const h = await startHarness({ limits: { maxSubscriptions: 3 }, auth: noReplay })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const c = await h.connect('alice')
  for (const leaf of ['Temperatura', 'Humedad', 'Estado']) t.equal(await subackCode(c, `metrics/alice/${leaf}`), 1, leaf)
  t.equal(await subackCode(c, 'metrics/alice/#'), 0x87, 'a 4th filter is refused')
  t.equal(await subackCode(c, 'metrics/alice/Humedad', 0), 0, 'the same filter again is granted')
  await c.unsubscribeAsync('metrics/alice/Estado')
  t.equal(await subackCode(c, 'metrics/alice/#'), 1, 'a freed slot is reused')
  t.match(events(h, 'limit.subscriptions')[0], { level: 40, user: 'alice', remote: '127.0.0.1', max: 3 })

  // One SUBSCRIBE with five filters: aedes asks for all of them at once.
  const many = await h.connect('alice')
  const granted = await new Promise<number[]>((resolve) => {
    many.subscribe(['metrics/alice/Temperatura', 'metrics/alice/Humedad', 'metrics/alice/Estado', 'metrics/alice/#', 'metrics/alice/+'], { qos: 0 }, (err: any, g) => {
      resolve(err?.packet?.granted ?? g?.map((x) => x.qos) ?? [])
    })
  })
  t.equal(granted.filter((q) => q === 0).length, 3, 'three granted')
  t.equal(granted.filter((q) => q === 0x87).length, 2, 'two refused')

  const old = await h.connect('alice', { protocolVersion: 4 })
  for (const leaf of ['Temperatura', 'Humedad', 'Estado']) await old.subscribeAsync(`metrics/alice/${leaf}`)
  t.equal(await subackCode(old, 'metrics/alice/#'), 0x80, '3.1.1: 0x80')
})

t.test('over publishRate: MQTT 5 gets DISCONNECT 0x96 and the excess is not published; a client under the rate is unaffected', async (t) => {
  const h = await startHarness({ limits: { publishRate: { messages: 5 } }, auth: noReplay })
  t.teardown(() => h.close())
  await h.addUser('alice')
  await h.addUser('bob')
  const watchBob = await h.connect('bob')
  await watchBob.subscribeAsync('metrics/bob/#')
  let fromBob = 0
  watchBob.on('message', () => fromBob++)
  const watchAlice = await h.connect('alice')
  await watchAlice.subscribeAsync('metrics/alice/#')
  let fromAlice = 0
  watchAlice.on('message', () => fromAlice++)

  const alice = await h.connect('alice')
  const flood = await h.connect('bob')
  const out = kicked(flood)
  for (let i = 0; i < 30; i++) flood.publish('metrics/bob/Temperatura', String(i), { qos: 0 })
  // Alice sends 8 messages at about 3 a second: more than the burst, less than the rate.
  for (let i = 0; i < 8; i++) {
    t.equal(await pubackCode(alice, 'metrics/alice/Temperatura', String(i)), 0)
    await new Promise((resolve) => setTimeout(resolve, 300))
  }
  t.equal(await out, 0x96, 'the flooding client is told 0x96')
  t.ok(await until(2000, () => fromAlice === 8), 'all of alice\'s messages arrived')
  t.ok(fromBob >= 5 && fromBob <= 7, `only about one second's worth of the flood was published (${fromBob} of 30)`)
  t.match(events(h, 'limit.publish_rate')[0], { level: 40, user: 'bob', remote: '127.0.0.1', kind: 'messages', max: 5 })

  const old = await h.connect('bob', { protocolVersion: 4 })
  const closed = kicked(old)
  for (let i = 0; i < 30; i++) old.publish('metrics/bob/Temperatura', String(i), { qos: 0 })
  t.equal(await closed, 'closed', '3.1.1: the connection is closed')
})

for (const [qos, answer] of [[1, 'puback'], [2, 'pubrec']] as const) {
  t.test(`a QoS ${qos} burst over the rate: ${answer.toUpperCase()}s for the allowed ones, then DISCONNECT 0x96 and nothing after it`, async (t) => {
    const h = await startHarness({ limits: { publishRate: { messages: 5 } }, auth: noReplay })
    t.teardown(() => h.close())
    await h.addUser('alice')
    const raw = await rawClient(h, { username: `alice|${h.code('alice')}`, password: Buffer.from(PASSWORD) })
    t.equal((await raw.next('connack'))?.reasonCode, 0)
    for (let i = 1; i <= 10; i++) raw.send({ cmd: 'publish', topic: 'metrics/alice/Temperatura', payload: Buffer.from(String(i)), qos, messageId: i, retain: false, dup: false })
    t.equal((await raw.next('disconnect') as any)?.reasonCode, 0x96)
    t.ok(await raw.closed(3000), 'then the connection is closed')
    t.equal(raw.packets.at(-1)?.cmd, 'disconnect', 'no packet after the DISCONNECT')
    // aedes answers once the message is published (patches/aedes/0019): the DISCONNECT waits.
    const answers = raw.packets.filter((p) => p.cmd === answer) as any[]
    t.same(answers.map((a) => a.messageId), [1, 2, 3, 4, 5], 'the five allowed are answered first')
    t.ok(answers.every((a) => (a.reasonCode ?? 0) === 0), 'with success')
  })
}

t.test('QoS 2 duplicates of one packet id over the rate: answered from the store, then DISCONNECT 0x96', async (t) => {
  const h = await startHarness({ limits: { publishRate: { messages: 5 } }, auth: noReplay })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const raw = await rawClient(h, { username: `alice|${h.code('alice')}`, password: Buffer.from(PASSWORD) })
  t.equal((await raw.next('connack'))?.reasonCode, 0)
  const publish = (): boolean => raw.send({ cmd: 'publish', topic: 'metrics/alice/Temperatura', payload: Buffer.from('x'), qos: 2, messageId: 1, retain: false, dup: false })
  publish()
  t.equal((await raw.next('pubrec') as any)?.messageId, 1, 'the first is received')
  // Stored now: the same id again (never released) is answered from the persistence and never
  // published; aedes reports it handled all the same (patches/aedes/0021).
  for (let i = 0; i < 9; i++) publish()
  t.equal((await raw.next('disconnect', 10_000) as any)?.reasonCode, 0x96, 'told 0x96 all the same')
  t.same(raw.packets.map((p) => p.cmd), ['connack', 'pubrec', 'pubrec', 'pubrec', 'pubrec', 'pubrec', 'disconnect'], 'after the PUBRECs of the five allowed')
  t.ok(await raw.closed(3000), 'then the connection is closed')
  t.equal(raw.packets.at(-1)?.cmd, 'disconnect', 'no packet after the DISCONNECT')
  t.ok(raw.packets.filter((p) => p.cmd === 'pubrec').every((p: any) => p.messageId === 1), 'only id 1 was answered')
  t.match(events(h, 'limit.publish_rate')[0], { level: 40, user: 'alice', kind: 'messages', max: 5 }, 'and logged')
  const other = await h.connect('alice')
  t.equal(await pubackCode(other, 'metrics/alice/Humedad', 'still up'), 0, 'the broker goes on serving')
})

t.test('3.1.1 over publishRate: the PUBACKs of the allowed QoS 1 messages arrive before the connection closes', async (t) => {
  const h = await startHarness({ limits: { publishRate: { messages: 5 } }, auth: noReplay })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const raw = await rawClient(h, { protocolVersion: 4, clientId: 'old-burst', username: `alice|${h.code('alice')}`, password: Buffer.from(PASSWORD) })
  t.equal((await raw.next('connack') as any)?.returnCode, 0)
  for (let i = 1; i <= 10; i++) raw.send({ cmd: 'publish', topic: 'metrics/alice/Temperatura', payload: Buffer.from(String(i)), qos: 1, messageId: i, retain: false, dup: false })
  t.ok(await raw.closed(10_000), 'closed')
  t.same(raw.packets.map((p) => p.cmd), ['connack', 'puback', 'puback', 'puback', 'puback', 'puback'], 'the five allowed are acknowledged first')
})

t.test('over subscribeRate: DISCONNECT 0x96 (3.1.1: closed), the SUBSCRIBE over it is not answered; a client under the rate is unaffected', async (t) => {
  const h = await startHarness({ limits: { subscribeRate: { packets: 3, filters: 10 } }, auth: noReplay, monitoring: { enabled: true, port: 0 } })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const calm = await h.connect('alice', { clientId: 'calm' })
  const flood = await h.connect('alice', { clientId: 'flood' })
  const out = kicked(flood)
  for (let i = 0; i < 10; i++) flood.subscribe(`metrics/alice/f${i}`, { qos: 0 })
  // Two SUBSCRIBEs a second: under the rate.
  for (const leaf of ['Temperatura', 'Humedad', 'Estado', '+', '#']) {
    t.equal(await subackCode(calm, `metrics/alice/${leaf}`), 1, `calm: ${leaf} granted`)
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  t.equal(await out, 0x96, 'the flooding client is told 0x96')
  t.equal(calm.connected, true, 'the calm one stays')
  const held = Object.keys((h.bastion.broker as any).clients.calm?.subscriptions ?? {}).length
  t.equal(held, 5, 'and holds its five filters')
  t.match(events(h, 'limit.subscribe_rate'), [{ level: 40, user: 'alice', clientId: 'flood', remote: '127.0.0.1', kind: 'packets', max: 3 }])
  const m = h.bastion.monitoring
  const metrics = await (await fetch(`http://${m?.host ?? ''}:${m?.port ?? 0}/metrics`)).text()
  t.match(metrics, /bastion_limit_hits_total\{limit="subscribe_rate"\} 1\b/)

  const raw = await rawClient(h, { protocolVersion: 4, clientId: 'old-flood', username: `alice|${h.code('alice')}`, password: Buffer.from(PASSWORD) })
  t.equal((await raw.next('connack') as any)?.returnCode, 0)
  for (let i = 1; i <= 6; i++) raw.send({ cmd: 'subscribe', messageId: i, subscriptions: [{ topic: `metrics/alice/x${i}`, qos: 0 }] })
  t.ok(await raw.closed(10_000), '3.1.1: closed')
  t.same(raw.packets.map((p) => p.cmd), ['connack', 'suback', 'suback', 'suback'], 'the three within the rate are answered first, the fourth never')
})

t.test('a subscriber that stops reading is disconnected (0x97) past maxQueuedBytes and does not stall delivery to others', async (t) => {
  const h = await startHarness({ limits: { maxQueuedBytes: 65536, publishRate: { messages: 1_000_000, bytes: 1_073_741_824 } }, auth: noReplay })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const slow = await rawClient(h, { clientId: 'slow-reader', username: `alice|${h.code('alice')}`, password: Buffer.from(PASSWORD) })
  t.equal((await slow.next('connack'))?.reasonCode, 0)
  slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'metrics/alice/#', qos: 0 }] })
  t.ok(await slow.next('suback'))
  slow.socket.pause()
  const fast = await h.connect('alice')
  await fast.subscribeAsync('metrics/alice/#')
  let received = 0
  // Only the publisher's topic: the slow reader's server will goes to metrics/alice/Estado.
  fast.on('message', (topic) => { if (topic === 'metrics/alice/Temperatura') received++ })
  const publisher = await h.connect('alice')
  const payload = Buffer.alloc(4096, 1)
  let sent = 0
  while (sent < 5000 && events(h, 'limit.queue').length === 0) {
    for (let i = 0; i < 50; i++, sent++) publisher.publish('metrics/alice/Temperatura', payload, { qos: 0 })
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
  // The queue is checked as the broker writes: on a loaded machine the line may come just after.
  await until(5000, () => events(h, 'limit.queue').length > 0)
  const hit = events(h, 'limit.queue')[0]
  t.match(hit, { level: 40, user: 'alice', clientId: 'slow-reader', remote: '127.0.0.1', max: 65536 }, `disconnected after ${sent} messages`)
  t.ok(hit?.queuedBytes > 65536)
  // Checked while the slow reader still reads nothing: it holds up no one.
  t.ok(await until(4000, () => received === sent), `the other subscriber got every message (${received} of ${sent})`)
  // Reading again within the grace period, it finds DISCONNECT 0x97 after what was queued.
  slow.socket.resume()
  t.equal((await slow.next('disconnect', 6000) as any)?.reasonCode, 0x97)
  t.equal(slow.packets.at(-1)?.cmd, 'disconnect', 'nothing after it')
  t.ok(await slow.closed(6000), 'then the connection is closed')
  t.ok(await until(2000, () => h.bastion.broker.clients['slow-reader'] === undefined), 'the client is gone')
  // Listening first: the delivery may reach `fast` before the PUBACK reaches the publisher.
  const next = nextMessage(fast)
  t.equal(await pubackCode(publisher, 'metrics/alice/Humedad', 'after'), 0)
  t.ok(await next, 'delivery goes on')
})
