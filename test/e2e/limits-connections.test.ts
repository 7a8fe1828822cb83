// Connection limits: per address and in total, TLS handshake and CONNECT timeouts, keepalive bounds.
import t from 'tap'
import mqtt from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { events, PASSWORD, pubackCode, startHarness, type Harness } from '../helpers/harness.js'
import { closesWithin, rawTcp, rawTls, until } from '../helpers/limits.js'

const noReplay = { totp: { replayProtection: false } }

/** Resolves whether the next TLS socket is accepted (true) or closed before its handshake (false). */
async function accepted (h: Harness): Promise<boolean> {
  try {
    const s = await rawTls(h)
    s.destroy()
    return true
  } catch {
    return false
  }
}

t.test('a socket over the per-address limit is closed before TLS; earlier ones keep working; a freed slot is reused', async (t) => {
  const h = await startHarness({ limits: { maxConnectionsPerIp: 3, connectTimeout: 30 }, auth: noReplay })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const c = await h.connect('alice')
  const held = [await rawTls(h), await rawTls(h)]
  t.equal(h.bastion.listeners.length, 1)
  t.notOk(await accepted(h), 'the 4th socket from 127.0.0.1 is closed')
  t.notOk(await accepted(h), 'and the 5th')
  const refused = events(h, 'limit.connections')
  t.equal(refused.length, 1, 'one log line for repeated refusals from one address')
  t.match(refused[0], { level: 40, scope: 'ip', remote: '127.0.0.1', limit: 3 })
  t.equal(await pubackCode(c, 'metrics/alice/Temperatura', '21.5'), 0, 'the connected client still publishes')
  held[0]?.destroy()
  // The server sees the close a moment later: bounded retries, no timing assumption.
  let again = false
  for (let i = 0; i < 40 && !again; i++) {
    again = await accepted(h)
    if (!again) await new Promise((resolve) => setTimeout(resolve, 50))
  }
  t.ok(again, 'a new socket is accepted once one has closed')
  held[1]?.destroy()
})

t.test('a socket over the total limit is closed, whatever its address; every refusal is counted in /metrics', async (t) => {
  const h = await startHarness({ limits: { maxConnections: 2, maxConnectionsPerIp: 0, connectTimeout: 30 }, monitoring: { enabled: true, port: 0 } })
  t.teardown(() => h.close())
  const held = [await rawTls(h), await rawTls(h)]
  t.notOk(await accepted(h), 'the 3rd socket is closed')
  t.notOk(await accepted(h), 'and the 4th')
  t.match(events(h, 'limit.connections')[0], { scope: 'total', remote: '127.0.0.1', limit: 2 })
  const m = h.bastion.monitoring
  const text = await (await fetch(`http://${m?.host}:${m?.port}/metrics`)).text()
  t.match(text, /^bastion_limit_hits_total\{limit="connections"\} 2$/m)
  t.match(text, /^bastion_limit_hits_total\{limit="publish_rate"\} 0$/m, 'every limit is listed from the start')
  for (const s of held) s.destroy()
})

t.test('a TCP socket that never starts TLS is closed after tlsHandshakeTimeout', async (t) => {
  const h = await startHarness({ limits: { tlsHandshakeTimeout: 1, connectTimeout: 30 } })
  t.teardown(() => h.close())
  const s = await rawTcp(h)
  t.ok(await closesWithin(s, 6000), 'closed by the server')
  t.ok(await until(1000, () => events(h, 'limit.handshake_timeout').length === 1))
  t.match(events(h, 'limit.handshake_timeout')[0], { level: 30, remote: '127.0.0.1' })
})

t.test('a TLS socket that sends nothing after the handshake is closed after connectTimeout', async (t) => {
  const h = await startHarness({ limits: { connectTimeout: 1 } })
  t.teardown(() => h.close())
  const s = await rawTls(h)
  t.ok(await closesWithin(s, 6000), 'closed by the server')
  t.ok(await until(1000, () => events(h, 'limit.connect_timeout').length === 1))
  t.match(events(h, 'limit.connect_timeout')[0], { level: 30, remote: '127.0.0.1' })
})

t.test('a CONNECT dripped one byte every 300 ms is closed after connectTimeout', async (t) => {
  const h = await startHarness({ limits: { connectTimeout: 1 } })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const bytes = mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'drip', keepalive: 30, username: `alice|${h.code('alice')}`, password: Buffer.from(PASSWORD) })
  const s = await rawTls(h)
  let sent = 0
  const timer = setInterval(() => { if (sent < bytes.length && !s.destroyed) s.write(bytes.subarray(sent, ++sent)) }, 300)
  t.teardown(() => clearInterval(timer))
  t.ok(await closesWithin(s, 6000), 'closed by the server')
  t.ok(sent < bytes.length, `closed before the CONNECT was complete (${sent} of ${bytes.length} bytes)`)
  t.ok(await until(1000, () => events(h, 'limit.connect_timeout').length === 1))
})

/** Connects with mqtt.js and resolves with the CONNACK. */
function connack (h: Harness, opts: mqtt.IClientOptions): Promise<any> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({ host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost', reconnectPeriod: 0, ...opts })
    c.once('connect', (packet) => { c.end(true); resolve(packet) })
    c.once('error', (err) => { c.end(true); reject(err) })
  })
}

t.test('keepalive 0 or over maxKeepAlive: MQTT 5 is told Server Keep Alive, MQTT 3.1.1 is refused with code 2', async (t) => {
  const h = await startHarness({ limits: { maxKeepAlive: 30 }, auth: noReplay })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const v5 = (): mqtt.IClientOptions => ({ protocolVersion: 5, username: `alice|${h.code('alice')}`, password: PASSWORD })
  t.equal((await connack(h, { ...v5(), keepalive: 0 })).properties?.serverKeepAlive, 30, 'v5 keepalive 0')
  t.equal((await connack(h, { ...v5(), keepalive: 600 })).properties?.serverKeepAlive, 30, 'v5 keepalive 600')
  t.equal((await connack(h, { ...v5(), keepalive: 20 })).properties?.serverKeepAlive, undefined, 'v5 keepalive 20 is kept')

  const v4 = (): mqtt.IClientOptions => ({ protocolVersion: 4, username: `alice|${h.code('alice')}`, password: PASSWORD })
  const logins = events(h, 'login.ok').length
  t.equal(await h.refused({ ...v4(), keepalive: 600 }), 2, '3.1.1 keepalive 600')
  t.equal(await h.refused({ ...v4(), keepalive: 0 }), 2, '3.1.1 keepalive 0')
  t.match(events(h, 'limit.keepalive')[0], { level: 40, remote: '127.0.0.1', requested: 600, max: 30 })
  t.equal(events(h, 'login.failed').filter((e) => e.reason === 'keepalive_rejected').length, 2)
  t.equal(events(h, 'login.ok').length, logins, 'refused before any credential check')
  t.equal((await connack(h, { ...v4(), keepalive: 20 })).returnCode, 0, '3.1.1 keepalive 20 is accepted')
})
