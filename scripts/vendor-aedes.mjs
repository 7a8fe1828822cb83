#!/usr/bin/env node
// Builds the broker engine: a copy of the pinned aedes with our patch set applied, written to
// dist/vendor/aedes and imported by src/engine/aedes.ts (package.json "imports": "#aedes"); and
// a copy of the pinned mqtt-packet with its own patches (patches/mqtt-packet), written to
// dist/vendor/mqtt-packet, which that aedes copy imports in place of the installed one.
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
import { dirname, join, relative, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { applyPatch, parsePatch } from 'diff'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

function die (message) {
  console.error(`vendor-aedes: ${message}`)
  process.exit(1)
}

/**
 * Copies `entries` of the installed package `name` (refusing any version but `pinned`) to
 * dist/vendor/<name> and applies patches/<name>/*.patch in name order; returns the patch names.
 */
function vendor (name, pinned, entries) {
  // Both packages' entry files sit at their root.
  const source = dirname(fileURLToPath(import.meta.resolve(name)))
  const target = join(root, 'dist', 'vendor', name)
  const patchDir = join(root, 'patches', name)
  const pkg = JSON.parse(readFileSync(join(source, 'package.json'), 'utf8'))
  if (pkg.version !== pinned) die(`node_modules has ${name} ${pkg.version}; the patch set is for ${pinned} (run npm ci)`)
  rmSync(target, { recursive: true, force: true })
  mkdirSync(target, { recursive: true })
  for (const entry of entries) cpSync(join(source, entry), join(target, entry), { recursive: true })
  const patches = readdirSync(patchDir).filter((f) => f.endsWith('.patch')).sort()
  for (const patch of patches) {
    for (const file of parsePatch(readFileSync(join(patchDir, patch), 'utf8'))) {
      const path = (file.newFileName ?? file.oldFileName ?? '').replace(/^b\//, '')
      if (path === '' || path.includes('..')) die(`${patch}: bad file name ${JSON.stringify(path)}`)
      const abs = join(target, path)
      const created = file.oldFileName === '/dev/null'
      if (!created && !existsSync(abs)) die(`${patch}: ${path} does not exist in ${name} ${pinned}`)
      const patched = applyPatch(created ? '' : readFileSync(abs, 'utf8'), file)
      if (patched === false) die(`${patch} does not apply to ${path}: the ${name} sources differ from what the patch expects`)
      mkdirSync(dirname(abs), { recursive: true })
      writeFileSync(abs, patched)
    }
  }
  return { target, patches }
}

// What aedes and mqtt-packet publish that runs or types them; tests, docs and examples stay behind.
const AEDES = '2.0.0-beta.1'
const MQTT_PACKET = '9.0.2'
const aedes = vendor('aedes', AEDES, ['aedes.js', 'aedes.d.ts', 'package.json', 'LICENSE', 'lib', 'types'])
const mqttPacket = vendor('mqtt-packet', MQTT_PACKET, ['mqtt.js', 'parser.js', 'generate.js', 'writeToStream.js', 'constants.js', 'numbers.js', 'packet.js', 'package.json', 'LICENSE.md', 'types'])

// The aedes copy imports the mqtt-packet copy: its `import ... from 'mqtt-packet'` lines point
// at dist/vendor/mqtt-packet instead of the installed package. mqtt-packet's own dependencies
// (debug, process-nextick-args) are direct dependencies of mqtt-bastion and resolve from here.
let rewritten = 0
for (const file of readdirSync(aedes.target, { recursive: true })) {
  if (!String(file).endsWith('.js')) continue
  const abs = join(aedes.target, String(file))
  const text = readFileSync(abs, 'utf8')
  const to = relative(dirname(abs), join(mqttPacket.target, 'mqtt.js')).split(sep).join('/')
  const next = text.replace(/from 'mqtt-packet'/g, () => { rewritten++; return `from '${to}'` })
  if (next !== text) writeFileSync(abs, next)
}
if (rewritten === 0) die(`no import of mqtt-packet found in aedes ${AEDES} to point at the patched copy`)

// What the running broker reports (src/engine/aedes.ts), so a log line names the patch sets.
writeFileSync(join(aedes.target, 'patches.json'), JSON.stringify({ aedes: AEDES, patches: aedes.patches, mqttPacket: MQTT_PACKET, mqttPacketPatches: mqttPacket.patches }, null, 2) + '\n')
console.error(`vendor-aedes: aedes ${AEDES} + ${aedes.patches.length} patches -> dist/vendor/aedes, mqtt-packet ${MQTT_PACKET} + ${mqttPacket.patches.length} -> dist/vendor/mqtt-packet`)
