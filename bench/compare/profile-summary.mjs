// Summarises a V8 CPU profile (`node --cpu-prof`) of our broker: self time by part (ours, the
// patched aedes, mqtt-packet and other dependencies, Node's internals, native calls such as the
// socket writes, GC, idle) and the top functions.
//
//   node bench/compare/profile-summary.mjs /tmp/prof/CPU.*.cpuprofile [--top 25] [--skip 4]
//
// Pass the main thread's profile (the largest file of a run; the others are worker threads).
// --skip S leaves out the first S seconds (start-up: loading modules, opening the store), so a
// profile of one scenario (`run.mjs --only qos1`) shows that scenario.
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'

let parsed
try {
  parsed = parseArgs({ allowPositionals: true, options: { top: { type: 'string' }, skip: { type: 'string' }, help: { type: 'boolean' } } })
} catch (err) {
  console.error(`profile-summary: ${err.message}`)
  process.exit(2)
}
const { values, positionals } = parsed
if (values.help || positionals.length !== 1) {
  console.log('Usage: node bench/compare/profile-summary.mjs FILE.cpuprofile [--top N] [--skip SECONDS]')
  process.exit(values.help ? 0 : 2)
}
const top = Number(values.top ?? 25)
if (!Number.isInteger(top) || top < 1) { console.error(`profile-summary: --top ${values.top}: expected a positive integer`); process.exit(2) }
const skipUs = Number(values.skip ?? 0) * 1e6
if (!(skipUs >= 0)) { console.error(`profile-summary: --skip ${values.skip}: expected seconds, 0 or more`); process.exit(2) }

let profile
try {
  profile = JSON.parse(readFileSync(positionals[0], 'utf8'))
} catch (err) {
  console.error(`profile-summary: ${positionals[0]}: ${err.message}`)
  process.exit(2)
}
if (!Array.isArray(profile.nodes) || !Array.isArray(profile.samples) || !Array.isArray(profile.timeDeltas)) {
  console.error(`profile-summary: ${positionals[0]}: not a V8 CPU profile (no nodes/samples/timeDeltas)`)
  process.exit(2)
}

const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const selfUs = new Map()
let at = 0
for (let i = 0; i < profile.samples.length; i++) {
  const from = at // a sample stands for the interval before it
  at += profile.timeDeltas[i]
  if (from >= skipUs) selfUs.set(profile.samples[i], (selfUs.get(profile.samples[i]) ?? 0) + profile.timeDeltas[i])
}
const total = [...selfUs.values()].reduce((a, b) => a + b, 0)

/** Which part of the process a frame belongs to, by its script URL. */
function part ({ url, functionName }) {
  if (url.includes('/dist/vendor/aedes/')) return 'aedes (patched)'
  if (url.includes('/dist/vendor/mqtt-packet/')) return 'mqtt-packet (patched)'
  if (url.includes('/node_modules/mqtt-packet/')) return 'mqtt-packet'
  if (url.includes('/node_modules/')) return `dependency: ${url.split('/node_modules/').pop().split('/')[0]}`
  if (url.includes('/dist/')) return 'ours (dist/)'
  if (url.startsWith('node:')) return 'Node internals (JS)'
  if (['(idle)', '(program)', '(garbage collector)'].includes(functionName)) return functionName
  return `native: ${functionName || '?'}`
}

const parts = new Map()
const functions = new Map()
for (const [id, us] of selfUs) {
  const frame = byId.get(id).callFrame
  const p = part(frame)
  parts.set(p, (parts.get(p) ?? 0) + us)
  const name = `${frame.functionName || '(anonymous)'} ${frame.url.split('/').pop()}:${frame.lineNumber + 1}`
  functions.set(name, (functions.get(name) ?? 0) + us)
}
const idle = parts.get('(idle)') ?? 0
const pct = (us) => `${(100 * us / total).toFixed(1).padStart(5)} %`
const busyPct = (us) => `${(100 * us / Math.max(1, total - idle)).toFixed(1).padStart(5)} %`
const rows = (map, n) => [...map].sort((a, b) => b[1] - a[1]).slice(0, n)

console.log(`${(total / 1e6).toFixed(1)} s sampled${skipUs > 0 ? ` after the first ${skipUs / 1e6} s` : ''}, ${pct(idle).trim()} idle\n`)
console.log('| part | of all | of busy |\n|---|---|---|')
for (const [name, us] of rows(parts, 20)) if (name !== '(idle)') console.log(`| ${name} | ${pct(us)} | ${busyPct(us)} |`)
console.log(`\n| function (self time) | of all | of busy |\n|---|---|---|`)
for (const [name, us] of rows(functions, top + 1)) if (!name.startsWith('(idle)')) console.log(`| ${name} | ${pct(us)} | ${busyPct(us)} |`)
