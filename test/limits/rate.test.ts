import t from 'tap'
import { createPublishBucket } from '../../src/limits/rate.js'

t.test('a full bucket allows one second of messages at once, then the rate', async (t) => {
  const b = createPublishBucket({ messages: 5, bytes: 1000 }, 0)
  for (let i = 0; i < 5; i++) t.equal(b.take(10, 0), undefined)
  t.equal(b.take(10, 0), 'messages', 'the 6th at once is over')
  t.equal(b.take(10, 100), 'messages', '0.5 of a message refilled after 100 ms')
  t.equal(b.take(10, 200), undefined, 'one refilled after 200 ms')
  t.equal(b.take(10, 10_000), undefined, 'refill stops at one second')
  for (let i = 0; i < 4; i++) t.equal(b.take(10, 10_000), undefined)
  t.equal(b.take(10, 10_000), 'messages')
})

t.test('payload bytes are a second allowance', async (t) => {
  const b = createPublishBucket({ messages: 100, bytes: 1000 }, 0)
  t.equal(b.take(600, 0), undefined)
  t.equal(b.take(600, 0), 'bytes')
  t.equal(b.take(600, 200), undefined, '200 bytes refilled in 200 ms')
  t.equal(b.take(0, 200), undefined, 'an empty payload costs only a message')
})
