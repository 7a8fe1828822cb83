#!/usr/bin/env node
// Builds the broker engine: a copy of the pinned aedes with our patch set applied, written to
// dist/vendor/aedes and imported by src/engine/aedes.ts (package.json "imports": "#aedes").
//
// Why a copy in dist/ and not a patch applied to node_modules/aedes: where mqtt-bastion is a
// dependency of another program, npm may hoist or dedupe aedes into a folder we do not own, and
// install scripts may be off (--ignore-scripts). The copy travels inside the published dist/, so
// the fixes hold wherever the package is installed. Its own imports (aedes-packet,
// aedes-persistence, mqemitter, mqtt-packet) are our direct dependencies and resolve from here.
//
// Every patch must apply exactly (no fuzz): a patch that no longer fits fails the build, naming
// the patch and the file.
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { applyPatch, parsePatch } from 'diff'

const PINNED = '2.0.0-beta.1'
const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const source = dirname(fileURLToPath(import.meta.resolve('aedes')))
const target = join(root, 'dist', 'vendor', 'aedes')
const patchDir = join(root, 'patches', 'aedes')

function die (message) {
  console.error(`vendor-aedes: ${message}`)
  process.exit(1)
}

const pkg = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8'))
if (pkg.version !== PINNED) die(`node_modules has aedes ${pkg.version}; the patch set is for ${PINNED} (run npm ci)`)

rmSync(target, { recursive: true, force: true })
mkdirSync(target, { recursive: true })
// What aedes publishes that runs or types the broker; its tests, docs and examples stay behind.
for (const entry of ['aedes.js', 'aedes.d.ts', 'package.json', 'LICENSE', 'lib', 'types']) {
  cpSync(join(source, entry), join(target, entry), { recursive: true })
}

const patches = readdirSync(patchDir).filter((f) => f.endsWith('.patch')).sort()
for (const name of patches) {
  for (const file of parsePatch(readFileSync(join(patchDir, name), 'utf8'))) {
    const path = (file.newFileName ?? file.oldFileName ?? '').replace(/^b\//, '')
    if (path === '' || path.includes('..')) die(`${name}: bad file name ${JSON.stringify(path)}`)
    const abs = join(target, path)
    const created = file.oldFileName === '/dev/null'
    if (!created && !existsSync(abs)) die(`${name}: ${path} does not exist in aedes ${PINNED}`)
    const patched = applyPatch(created ? '' : readFileSync(abs, 'utf8'), file)
    if (patched === false) die(`${name} does not apply to ${path}: the aedes sources differ from what the patch expects`)
    mkdirSync(dirname(abs), { recursive: true })
    writeFileSync(abs, patched)
  }
}
// What the running broker reports (src/engine/aedes.ts), so a log line names the patch set.
writeFileSync(join(target, 'patches.json'), JSON.stringify({ aedes: PINNED, patches }, null, 2) + '\n')
console.error(`vendor-aedes: aedes ${PINNED} + ${patches.length} patches -> dist/vendor/aedes`)
