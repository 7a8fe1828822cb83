// The compare bench's tooling that runs without brokers: the CPU profile summary and the
// argument checks of run.mjs (--only, --baseline), which must refuse bad input in one line
// before anything is started.
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
const SUMMARY = join(process.cwd(), 'bench', 'compare', 'profile-summary.mjs')
const RUN = join(process.cwd(), 'bench', 'compare', 'run.mjs')

async function fails (args: string[]): Promise<{ code: number; stderr: string }> {
  try {
    await run(process.execPath, args, { timeout: 30_000 })
  } catch (err) {
    const e = err as { code: number; stderr: string }
    return { code: e.code, stderr: e.stderr }
  }
  throw new Error(`${args.join(' ')} succeeded`)
}

/** A profile of 10 s: 1 s of start-up in Node's loader, then idle, aedes, mqtt-packet and writev. */
function profile (dir: string): string {
  const frame = (id: number, functionName: string, url: string, children: number[] = []): object =>
    ({ id, callFrame: { functionName, url, lineNumber: 9, columnNumber: 0, scriptId: '0' }, children })
  const nodes = [
    frame(1, '(root)', '', [2, 3, 4, 5, 6]),
    frame(2, 'wrapSafe', 'node:internal/modules/cjs/loader'),
    frame(3, '(idle)', ''),
    frame(4, 'sendQoS', 'file:///x/dist/vendor/aedes/lib/client.js'),
    frame(5, 'parse', '/x/node_modules/mqtt-packet/parser.js'),
    frame(6, 'writev', '')
  ]
  // [node, µs]: start-up first, then the steady part
  const steps: Array<[number, number]> = [[2, 1_000_000], [3, 4_500_000], [4, 2_000_000], [5, 1_500_000], [6, 1_000_000]]
  const file = join(dir, 'p.cpuprofile')
  writeFileSync(file, JSON.stringify({ nodes, startTime: 0, endTime: 10_000_000, samples: steps.map((s) => s[0]), timeDeltas: steps.map((s) => s[1]) }))
  return file
}

t.test('profile-summary: self time by part and by function, after an optional skip', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-prof-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = profile(dir)
  const all = (await run(process.execPath, [SUMMARY, file])).stdout
  t.match(all, /^10\.0 s sampled, 45\.0 % idle/)
  t.match(all, /\| aedes \(patched\) \| {2}20\.0 % \| {2}36\.4 % \|/, 'aedes: 2 of 10 s, 2 of 5.5 busy')
  t.match(all, /\| Node internals \(JS\) \| {2}10\.0 % \|/)
  t.match(all, /\| native: writev \| {2}10\.0 % \|/)
  t.match(all, /\| sendQoS client\.js:10 \| {2}20\.0 % \|/, 'functions named with file and 1-based line')
  const skipped = (await run(process.execPath, [SUMMARY, file, '--skip', '1'])).stdout
  t.match(skipped, /^9\.0 s sampled after the first 1 s, 50\.0 % idle/)
  t.notMatch(skipped, /Node internals/, 'the start-up is left out')
  t.match(skipped, /\| mqtt-packet \| {2}16\.7 % \| {2}33\.3 % \|/)
})

t.test('profile-summary refuses bad input in one line', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-prof-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const notProfile = join(dir, 'x.json')
  writeFileSync(notProfile, '{"__proto__": {"nodes": []}}')
  for (const [args, msg] of [
    [[join(dir, 'missing')], /missing: ENOENT/],
    [[notProfile], /not a V8 CPU profile/],
    [[notProfile, '--top', '0'], /--top 0: expected a positive integer/],
    [[notProfile, '--skip=-1'], /--skip -1: expected seconds/],
    [[notProfile, '--bogus'], /profile-summary: Unknown option '--bogus'/],
    [[], /^Usage:/]
  ] as Array<[string[], RegExp]>) {
    const r = await fails([SUMMARY, ...args])
    t.equal(r.code, 2, `${args.join(' ') || '(no file)'}: exit 2`)
    if (args.length > 0) t.match(r.stderr, msg)
    t.ok(r.stderr.trim().split('\n').length <= 1, 'one line')
  }
})

t.test('run.mjs refuses --only and --baseline it cannot honour, before starting anything', async (t) => {
  for (const [args, msg] of [
    [['--only', 'qos1,bogus'], /--only qos1,bogus: expected a list of idle,qos1,qos0,latency,connects/],
    [['--only', ''], /--only : expected a list/],
    [['--baseline', '/nonexistent-build'], /--baseline \/nonexistent-build: no dist\/cli\/main\.js there/],
    [['--brokers', 'base'], /"base" needs --baseline DIR/],
    [['--bogus'], /^compare: Unknown option '--bogus'.*\(--help lists the options\)$/m]
  ] as Array<[string[], RegExp]>) {
    const r = await fails([RUN, ...args])
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.match(r.stderr, msg)
  }
})
