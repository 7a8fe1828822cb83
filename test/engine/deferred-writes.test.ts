// Deliveries and write callbacks of one event-loop turn share one Immediate (patches/aedes/0017):
// a burst of N messages read in one turn costs a few setImmediate calls, not one per delivery and
// one per packet written, and leaves for the subscriber in one socket write. Counted in this
// process, on the broker's side of the subscriber's socket.
import t from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Client } from 'aedes'
import type { MqttClient } from 'mqtt'
import { PASSWORD, startHarness, type Harness } from '../helpers/harness.js'
import { rawLogin, type Packet } from '../helpers/raw-mqtt.js'

const DEFER = join(process.cwd(), 'dist', 'vendor', 'aedes', 'lib', 'defer.js')
const run = promisify(execFile)
const N = 20

/** Counts the stream writes (`_write` or `_writev`, one per flush) made on a socket. */
function countWrites (conn: object): { writes: number } {
  const counter = { writes: 0 }
  const s = conn as { _write: (...a: unknown[]) => unknown; _writev?: (...a: unknown[]) => unknown }
  const write = s._write.bind(s)
  s._write = (...a) => { counter.writes++; return write(...a) }
  if (s._writev !== undefined) {
    const writev = s._writev.bind(s)
    s._writev = (...a) => { counter.writes++; return writev(...a) }
  }
  return counter
}

/**
 * Counts setImmediate calls in this process (broker, and both clients) until stop(): aedes calls
 * the global one.
 */
function countImmediates (t: Tap.Test): { count: number; stop: () => void } {
  const original = globalThis.setImmediate
  const counter = {
    count: 0,
    stop () { globalThis.setImmediate = original }
  }
  globalThis.setImmediate = ((...a: Parameters<typeof setImmediate>) => { counter.count++; return original(...a) }) as typeof setImmediate
  t.teardown(counter.stop)
  return counter
}

function receive (c: MqttClient, n: number, ms: number): Promise<number> {
  return new Promise((resolve) => {
    let got = 0
    const timer = setTimeout(() => { c.off('message', on); resolve(got) }, ms)
    const on = (): void => { if (++got === n) { clearTimeout(timer); c.off('message', on); resolve(got) } }
    c.on('message', on)
  })
}

async function burst (t: Tap.Test, h: Harness, qos: 0 | 1): Promise<void> {
  const user = `burst${qos}`
  await h.addUser(user)
  const sub = await h.connect(user, { clientId: `${user}-sub` })
  t.teardown(() => sub.end(true))
  await sub.subscribeAsync(`metrics/${user}/#`, { qos: 1 })
  const server = h.bastion.broker.clients[`${user}-sub`] as unknown as Client | undefined
  t.ok(server, 'the subscriber is connected')
  const counter = countWrites(server!.conn)

  const { c: pub, connack } = await rawLogin({ port: h.port, ca: h.ca }, 5, { clientId: `${user}-pub`, username: `${user}|${h.code(user)}`, password: PASSWORD })
  t.teardown(() => pub.destroy())
  t.equal((connack as Packet).reasonCode, 0, 'the publisher is logged in')
  const got = receive(sub, N, 10_000)
  const immediates = countImmediates(t)
  // All N PUBLISHes in one TLS record: the broker reads and parses them in one turn.
  pub.socket.cork()
  for (let i = 1; i <= N; i++) pub.send({ cmd: 'publish', topic: `metrics/${user}/Temperatura`, payload: `${i}`, qos, messageId: qos === 0 ? undefined : i })
  pub.socket.uncork()
  t.equal(await got, N, `the subscriber received all ${N} QoS ${qos} messages`)
  immediates.stop()
  t.ok(counter.writes >= 1 && counter.writes < 5, `${N} deliveries of one turn left in ${counter.writes} socket write(s)`)
  t.ok(immediates.count < N, `${immediates.count} setImmediate calls in this process for ${N} messages (one per delivery and per write without the patch)`)
  if (qos === 1) {
    const acks = await Promise.all(Array.from({ length: N }, () => pub.until((p) => p.cmd === 'puback', 5000)))
    t.same(acks.map((p) => typeof p === 'string' ? p : p.messageId), Array.from({ length: N }, (_, i) => i + 1), 'every PUBLISH was acknowledged, in order')
  }
}

t.test('a burst read in one turn reaches its subscriber in a few writes', async (t) => {
  const h = await startHarness({ auth: { totp: { replayProtection: false } } })
  t.teardown(() => h.close())
  await t.test('QoS 0', (t) => burst(t, h, 0))
  await t.test('QoS 1', (t) => burst(t, h, 1))
})

t.test('the deferral queue: in order, one turn later, and a throw loses nothing', async (t) => {
  const script = `
    const { default: defer } = await import(${JSON.stringify(DEFER)})
    const seen = []
    process.on('uncaughtException', (err) => seen.push('caught ' + err.message))
    defer((a, b, c) => seen.push('first ' + a + b + c), 1, 2, 3)
    defer(() => {
      seen.push('second')
      // deferred while a batch runs: after what setImmediate queued meanwhile, like setImmediate
      defer(() => seen.push('next turn'))
      setImmediate(() => seen.push('immediate'))
    })
    defer(() => { throw new Error('boom') })
    defer(() => seen.push('after the throw'))
    setTimeout(() => console.log(JSON.stringify(seen)), 50)
  `
  const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, NODE_OPTIONS: '' } })
  // The throw is reported, and the rest of its batch runs next turn, ahead of what was deferred later.
  t.same(JSON.parse(stdout), ['first 123', 'second', 'caught boom', 'after the throw', 'next turn', 'immediate'])
})
