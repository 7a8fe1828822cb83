import t from 'tap'
import { createPublishBucket, createSubscribeBucket } from '../../src/limits/rate.js'

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

t.test('SUBSCRIBE / UNSUBSCRIBE: packets and filters per second, one second of burst', async (t) => {
  const b = createSubscribeBucket({ packets: 3, filters: 10 }, 0)
  t.equal(b.take(4, 0), undefined)
  t.equal(b.take(4, 0), undefined)
  t.equal(b.take(4, 0), 'filters', '12 filters at once are over 10')
  t.equal(b.take(2, 0), undefined, 'a third packet of two filters fits')
  t.equal(b.take(0, 0), 'packets', 'a 4th packet at once is over')
  t.equal(b.take(1, 400), undefined, '1.2 packets and 4 filters refilled in 400 ms')
  t.equal(createSubscribeBucket({ packets: 10, filters: 5 }, 0).take(6, 0), 'filters', 'a packet with more filters than a second\'s worth never fits')
})
