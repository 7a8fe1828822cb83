// Client sockets have TCP_NODELAY: a delivery or PUBACK leaves when written, not when the peer
// has acknowledged the previous segment (Nagle). Node keeps the setting under a symbol of the
// accepted socket (pinned here, Node 20); the latency itself is the bench's business.
import t from 'tap'
import type { Socket } from 'node:net'
import { startHarness } from '../helpers/harness.js'

function noDelayOf (socket: Socket): unknown {
  const key = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'kSetNoDelay')
  return key === undefined ? 'no kSetNoDelay symbol' : (socket as unknown as Record<symbol, unknown>)[key]
}

t.test('the TLS listener accepts client sockets with TCP_NODELAY set', async (t) => {
  const h = await startHarness({ auth: { totp: { replayProtection: false } } })
  t.teardown(() => h.close())
  await h.addUser('nd')
  const c = await h.connect('nd', { clientId: 'nd-1' })
  t.teardown(() => c.endAsync(true))
  const conn = h.bastion.broker.clients['nd-1']?.conn as unknown as { _parent?: Socket } & Socket
  t.ok(conn, 'connected')
  // The TLS socket wraps the TCP socket the front listener accepted.
  t.equal(noDelayOf(conn._parent ?? conn), true)
})
