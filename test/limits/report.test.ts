import t from 'tap'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import type { HookEvent } from '../../src/auth/hooks.js'
import { createLimitReporter } from '../../src/limits/report.js'

function setup (maxKeys = 10): { lines: Array<Record<string, any>>; events: HookEvent[]; clock: { t: number }; report: ReturnType<typeof createLimitReporter> } {
  const lines: Array<Record<string, any>> = []
  const log = pino({ level: 'debug' }, new Writable({ write (chunk: Buffer, _e, cb) { lines.push(JSON.parse(chunk.toString())); cb() } }))
  const events: HookEvent[] = []
  const clock = { t: 1_000_000 }
  const report = createLimitReporter({ log, onEvent: (e) => events.push(e), now: () => clock.t, maxKeys })
  return { lines, events, clock, report }
}

const flush = async (): Promise<void> => await new Promise((resolve) => setImmediate(resolve))

t.test('every hit is an event; one log line per key and minute, the next one counts what was left out', async (t) => {
  const { lines, events, clock, report } = setup()
  for (let i = 0; i < 5; i++) report.hit('connections', '10.0.0.1', 'warn', { scope: 'ip', remote: '10.0.0.1', limit: 3 }, 'refused')
  report.hit('connections', '10.0.0.2', 'warn', { scope: 'ip', remote: '10.0.0.2', limit: 3 }, 'refused')
  report.hit('publish_rate', '10.0.0.1', 'warn', { kind: 'messages' }, 'refused')
  await flush()
  t.equal(events.length, 7)
  t.same(events[0], { type: 'limit', limit: 'connections' })
  t.equal(lines.length, 3, 'one per key and limit')
  t.match(lines[0], { level: 40, event: 'limit.connections', scope: 'ip', remote: '10.0.0.1', limit: 3 })
  t.notOk('suppressed' in lines[0])
  clock.t += 60_000
  report.hit('connections', '10.0.0.1', 'warn', { remote: '10.0.0.1' }, 'refused')
  await flush()
  t.match(lines[3], { event: 'limit.connections', remote: '10.0.0.1', suppressed: 4 })
})

t.test('keys past maxKeys share one line, so a spread of addresses cannot flood the log', async (t) => {
  const { lines, events, report } = setup(3)
  for (let i = 0; i < 50; i++) report.hit('handshake_timeout', `10.0.1.${i}`, 'info', { remote: `10.0.1.${i}` }, 'slow')
  await flush()
  t.equal(events.length, 50)
  t.equal(lines.length, 4, 'three keys, then one shared')
  t.equal(lines[0].level, 30)
})
