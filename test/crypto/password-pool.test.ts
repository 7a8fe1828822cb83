import t from 'tap'
import bcrypt from 'bcryptjs'
import { createPasswordPool } from '../../src/crypto/password-pool.js'

const pool = createPasswordPool(2)
t.teardown(() => pool.close())

t.test('verifies $2a$, $2b$ and $2y$ hashes of any cost, refuses wrong or malformed ones', async (t) => {
  const h = bcrypt.hashSync('s3cret-pass', 5)
  t.equal(await pool.verify('s3cret-pass', h), true)
  t.equal(await pool.verify('s3cret-pass', h.replace('$2b$', '$2a$')), true)
  t.equal(await pool.verify('s3cret-pass', h.replace('$2b$', '$2y$')), true)
  t.equal(await pool.verify('wrong', h), false)
  t.equal(await pool.verify('s3cret-pass', 'not a hash'), false)
  t.equal(await pool.verify('s3cret-pass', ''), false)
  // Made by Python: bcrypt.hashpw(b'correct horse battery', bcrypt.gensalt())
  t.equal(await pool.verify('correct horse battery', '$2b$12$CAi96KlkEBVfN.iXyoyAp.fp97w1t0sIjPQ/EHTGMxNtkUyor7a0S'), true)
})

t.test('hashing and verifying run off the event loop', async (t) => {
  // A cost-12 verify takes hundreds of milliseconds. Run on this thread, it would let no timer
  // fire until it finished; in a worker, a 5 ms interval keeps ticking meanwhile.
  let ticks = 0
  const timer = setInterval(() => { ticks++ }, 5)
  const h = await pool.hash('another-pass', 12)
  const ticksWhileHashing = ticks
  const ok = await pool.verify('another-pass', h)
  clearInterval(timer)
  t.equal(ok, true)
  t.ok(ticksWhileHashing >= 5, `timers kept firing while hashing (${ticksWhileHashing} ticks)`)
  t.ok(ticks - ticksWhileHashing >= 5, `timers kept firing while verifying (${ticks - ticksWhileHashing} ticks)`)
})

t.test('a closed pool refuses work', async (t) => {
  const p = createPasswordPool(1)
  await p.close()
  await t.rejects(p.verify('x', 'y'), /closed/)
})
