// Loaded into every test process before the test file (package.json "tap": "node-arg"). Plain
// JavaScript: it runs before any TypeScript loader is needed. Two things tap's own loaders cost
// each test over and over, which nothing under test needs; neither changes what runs or what a
// test sees. Each has an env switch that turns it off, for comparison.
//
// 1. Bcrypt worker threads from the compiled twin (BASTION_TEST_SOURCE_WORKERS=1: off).
//    Under tap, a broker's bcrypt pool (src/crypto/password-pool.ts) starts its worker threads
//    from src/crypto/password-worker.ts, and each worker inherits the test process's loaders
//    (ts-node, @tapjs/mock, @tapjs/processinfo): every worker loads the TypeScript compiler
//    again, about 2.5 s of CPU (0.3 s without), two workers per broker, one broker or more per
//    test. Here a worker thread started from a .ts file under src/ runs the same module
//    compiled by `npm run build` (dist/; `npm test` builds before tap) without those loaders, as
//    the broker runs in production. Only while dist is current: if any file under src/ is newer
//    than the compiled twin (src edited, no build since), the worker starts from the source as
//    before. Same options otherwise, same code, same messages.
//
// 2. Processes the tests spawn run without tap's process-info loader (BASTION_TEST_PROCESSINFO=1:
//    off). @tapjs/processinfo puts its --import into NODE_OPTIONS of every child process, so each
//    `mqtt-bastion` CLI run, broker process and cluster worker a test starts routes every module
//    it loads through a loader thread: `mqtt-bastion user list` takes 1.2 s of CPU with it, 0.7 s
//    without. It records which files a process loaded, for coverage (off in package.json) and
//    `tap --changed`; it is dropped here from the NODE_OPTIONS of processes a test starts (the
//    test processes themselves keep it; test/helpers/fuzz.ts already drops all of NODE_OPTIONS
//    for its memory measurements). Any other NODE_OPTIONS a test sets are kept as they are.
import { readdirSync, statSync } from 'node:fs'
import { syncBuiltinESMExports } from 'node:module'
import { join, relative, sep } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import workerThreads from 'node:worker_threads'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const SRC = join(ROOT, 'src')
const DIST = join(ROOT, 'dist')

// --- 1 --------------------------------------------------------------------------------------
let newestSource
function newestSourceMtime () {
  if (newestSource !== undefined) return newestSource
  newestSource = 0
  const walk = (dir) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name)
      if (e.isDirectory()) walk(p)
      else newestSource = Math.max(newestSource, statSync(p).mtimeMs)
    }
  }
  walk(SRC)
  return newestSource
}

/** The compiled twin of a worker file under src/, when dist holds a build at least as new as src. */
function compiledTwin (filename) {
  let path
  try {
    path = filename instanceof URL || (typeof filename === 'string' && filename.startsWith('file:')) ? fileURLToPath(filename) : undefined
  } catch {
    return undefined
  }
  if (path === undefined || !path.endsWith('.ts')) return undefined
  const rel = relative(SRC, path)
  if (rel.startsWith('..') || rel.startsWith(sep)) return undefined
  const twin = join(DIST, rel.slice(0, -3) + '.js')
  try {
    if (statSync(twin).mtimeMs < newestSourceMtime()) return undefined
  } catch {
    return undefined
  }
  return pathToFileURL(twin)
}

if (process.env.BASTION_TEST_SOURCE_WORKERS !== '1') {
  const Original = workerThreads.Worker
  class Worker extends Original {
    constructor (filename, options) {
      const twin = compiledTwin(filename)
      if (twin === undefined) super(filename, options)
      else super(twin, { ...options, execArgv: options?.execArgv ?? [] })
    }
  }
  workerThreads.Worker = Worker
  syncBuiltinESMExports()
}

// --- 2 --------------------------------------------------------------------------------------
// @tapjs/processinfo adds its option through process-on-spawn, whose listeners live in one
// global list and run in order, for every child process; this one runs after processinfo's.
// NODE_OPTIONS is read and written with tap's own parser (node-options-to-argv, which quotes
// each option); without it, nothing is changed.
const spawnHooks = globalThis[Symbol.for('process-on-spawn@*:singletonId')]
const PROCESSINFO = /^--(?:import|loader|experimental-loader)=\S*[\\/]@tapjs[\\/]processinfo[\\/]\S*$/
const nodeOptions = await import('node-options-to-argv').catch(() => undefined)
if (process.env.BASTION_TEST_PROCESSINFO !== '1' && Array.isArray(spawnHooks?.listeners) && nodeOptions !== undefined) {
  spawnHooks.listeners.push((opts) => {
    const options = opts.env?.NODE_OPTIONS
    if (typeof options !== 'string') return
    const args = nodeOptions.nodeOptionsToArgv(options)
    const kept = args.filter((a) => !PROCESSINFO.test(a))
    if (kept.length === args.length) return
    const env = { ...opts.env }
    if (kept.length === 0) delete env.NODE_OPTIONS
    else env.NODE_OPTIONS = nodeOptions.argvToNodeOptions(kept)
    opts.env = env
  })
}
