// The connection limiter's bookkeeping: every slot an admitted or held socket takes is given
// back once, when it closes, whichever way it came in (one close listener per socket).
import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import t from 'tap'
import { createConnectionLimiter } from '../../src/limits/connections.js'

type Report = Parameters<typeof createConnectionLimiter>[1]

function setup (maxConnections: number, maxConnectionsPerIp: number): { limiter: ReturnType<typeof createConnectionLimiter>; refused: Array<Record<string, unknown>> } {
  const refused: Array<Record<string, unknown>> = []
  const report = { hit (_limit: string, _key: string, _level: string, fields: Record<string, unknown>) { refused.push(fields) } } as unknown as Report
  return { limiter: createConnectionLimiter({ maxConnections, maxConnectionsPerIp }, report), refused }
}

/** What the limiter reads of a socket: its address, whether it is destroyed, its 'close'. */
function socket (remoteAddress: string | undefined): Socket & { close: () => void } {
  const s = Object.assign(new EventEmitter(), { remoteAddress, destroyed: false }) as unknown as Socket & { close: () => void }
  s.close = () => { (s as { destroyed: boolean }).destroyed = true; s.emit('close') }
  return s
}

t.test('admitted sockets count in the total and per address until they close', async (t) => {
  const { limiter, refused } = setup(3, 2)
  const a1 = socket('10.0.0.1')
  const a2 = socket('10.0.0.1')
  const b1 = socket('10.0.0.2')
  t.ok(limiter.admit(a1) && limiter.admit(a2))
  t.notOk(limiter.admit(socket('10.0.0.1')), 'over the per-address limit')
  t.ok(limiter.admit(b1))
  t.equal(limiter.open(), 3)
  t.equal(limiter.open('10.0.0.1'), 2)
  t.notOk(limiter.admit(socket('10.0.0.3')), 'over the total')
  t.match(refused, [{ scope: 'ip', remote: '10.0.0.1', limit: 2 }, { scope: 'total', remote: '10.0.0.3', limit: 3 }])
  a1.close()
  t.equal(limiter.open(), 2)
  t.equal(limiter.open('10.0.0.1'), 1)
  a1.emit('close')
  t.equal(limiter.open(), 2, 'a second close gives nothing back twice')
  t.equal(limiter.open('10.0.0.1'), 1)
  const a3 = socket('10.0.0.1')
  t.ok(limiter.admit(a3), 'the freed slots are taken again')
  t.equal(limiter.open('10.0.0.1'), 2)
  for (const s of [a2, a3, b1]) s.close()
  t.equal(limiter.open(), 0)
  t.equal(limiter.open('10.0.0.1'), 0)
  t.equal(limiter.open('10.0.0.2'), 0)
})

t.test('a held socket (PROXY header awaited) counts once, in the total, and its address once admitted', async (t) => {
  const { limiter } = setup(2, 0)
  const p = socket('127.0.0.1')
  t.ok(limiter.hold(p))
  t.equal(limiter.open(), 1)
  t.equal(limiter.open('127.0.0.1'), 0, 'the proxy\'s own address is not counted')
  Object.defineProperty(p, 'remoteAddress', { value: '203.0.113.7' })
  t.ok(limiter.admit(p))
  t.equal(limiter.open(), 1, 'admitting a held socket does not count it twice')
  t.equal(limiter.open('203.0.113.7'), 1)
  const q = socket('127.0.0.1')
  t.ok(limiter.hold(q))
  t.notOk(limiter.hold(socket('127.0.0.1')), 'held sockets count against the total')
  q.close()
  t.equal(limiter.open(), 1, 'a held socket closing before its header gives its slot back')
  t.notOk(limiter.admit(q), 'and is not admitted afterwards')
  p.close()
  t.equal(limiter.open(), 0)
  t.equal(limiter.open('203.0.113.7'), 0)
})

t.test('a held socket refused for its address gives the total back when the listener closes it', async (t) => {
  const { limiter } = setup(10, 1)
  const first = socket('198.51.100.1')
  t.ok(limiter.admit(first))
  const held = socket('127.0.0.1')
  t.ok(limiter.hold(held))
  Object.defineProperty(held, 'remoteAddress', { value: '198.51.100.1' })
  t.notOk(limiter.admit(held), 'over the per-address limit')
  held.close()
  t.equal(limiter.open(), 1)
  t.equal(limiter.open('198.51.100.1'), 1, 'the refused one took no address slot')
})
