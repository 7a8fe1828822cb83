// What an aedes client hangs on its connection (patches/aedes/0022): one listener per event, the
// same function for every connection (it finds its client through the socket), and not
// stream.finished()'s seven closures nor bound copies per connection. An idle device keeps its
// connection for hours; those were ~1.2 KB of JS heap each. The connection still ends its
// client however it ends. A bare aedes on a plain TCP server of the test's own on 127.0.0.1.
import t from 'tap'
import { connect as netConnect, createServer, type AddressInfo, type Socket } from 'node:net'
import mqttPacket from 'mqtt-packet'
import { Aedes } from '../../src/engine/aedes.js'

const EVENTS = ['readable', 'data', 'end', 'finish', 'close', 'error', 'drain', 'prefinish']
type Listeners = Record<string, unknown[]>
const listenersOf = (s: Socket): Listeners => Object.fromEntries(EVENTS.map((e) => [e, s.listeners(e) as unknown[]]))

async function broker (t: Tap.Test): Promise<{ port: number; added: Listeners[]; b: Aedes }> {
  const b = await Aedes.createBroker({})
  const added: Listeners[] = []
  const server = createServer((s) => {
    const before = listenersOf(s)
    b.handle(s)
    const after = listenersOf(s)
    added.push(Object.fromEntries(EVENTS.map((e) => [e, (after[e] ?? []).filter((f) => !(before[e] ?? []).includes(f))])))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.close()
    await new Promise<void>((resolve) => b.close(() => resolve()))
  })
  return { port: (server.address() as AddressInfo).port, added, b }
}

async function connected (port: number, clientId: string): Promise<Socket> {
  const s = netConnect({ host: '127.0.0.1', port })
  s.on('error', () => {})
  await new Promise<void>((resolve) => s.once('connect', () => resolve()))
  s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 60 }))
  await new Promise<void>((resolve) => s.once('data', () => resolve()))
  return s
}

t.test('one listener per event on the connection, shared by every connection but the reader', async (t) => {
  const { port, added } = await broker(t)
  const a = await connected(port, 'a')
  const b = await connected(port, 'b')
  t.teardown(() => { a.destroy(); b.destroy() })
  const [first, second] = added as [Listeners, Listeners]
  t.same(Object.fromEntries(Object.entries(first).map(([e, fns]) => [e, fns.length])),
    { readable: 1, data: 0, end: 1, finish: 0, close: 1, error: 1, drain: 0, prefinish: 0 }, 'readable, end, close and error: one each')
  for (const e of ['end', 'close', 'error']) {
    t.equal(first[e]?.[0], second[e]?.[0], `the '${e}' listener is one function for both connections`)
  }
})

t.test('the client ends with its connection: the peer ending it, or resetting it', async (t) => {
  const { port, b } = await broker(t)
  const gone: string[] = []
  b.on('clientDisconnect', (c) => { gone.push(c.id) })
  const ending = await connected(port, 'ending')
  const reset = await connected(port, 'reset')
  ending.end()
  reset.resetAndDestroy()
  for (let i = 0; i < 300 && gone.length < 2; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.same(gone.sort(), ['ending', 'reset'], 'both clients are gone')
  t.same(Object.keys((b as unknown as { clients: Record<string, unknown> }).clients), [], 'and none is left in the broker')
})
