// mqtt-packet calls debug() at every step of every packet it parses or writes; with its
// namespace off when it loads, those calls go to an empty function (patches/mqtt-packet/0001),
// and with DEBUG set they still log, but never a packet's contents (0003). The patched copy (dist/vendor/mqtt-packet) runs in a child
// process whose `debug` package counts the calls made to the loggers it hands out.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

const COPY = join(process.cwd(), 'dist', 'vendor', 'mqtt-packet')
// In a password, a username and every payload; with logging on it must not appear (patch 0003).
const SECRET = 'hunter2-s3cret'
const CHILD = `
const { createRequire } = require('node:module')
const req = createRequire(${JSON.stringify(join(COPY, 'parser.js'))})
const real = req('debug')
let calls = 0
req.cache[req.resolve('debug')].exports = Object.assign(function (namespace) {
  const d = real(namespace)
  const counted = function (...args) { calls++; return d(...args) }
  Object.defineProperty(counted, 'enabled', { get: () => d.enabled })
  return counted
}, real)
const mqtt = req('./mqtt.js')
const parser = mqtt.parser({ protocolVersion: 4 })
let packets = 0
parser.on('packet', () => { packets++ })
const stream = { write: () => true, cork () {}, uncork () {}, destroy () {} }
const login = { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'dev', keepalive: 60, username: 'alice|${SECRET}', password: Buffer.from('${SECRET}') }
mqtt.writeToStream(login, stream)
parser.parse(mqtt.generate(login))
for (let i = 1; i <= 100; i++) {
  const packet = { cmd: 'publish', topic: 't', payload: '${SECRET}', qos: 1, messageId: i, retain: false, dup: false }
  mqtt.writeToStream(packet, stream)
  parser.parse(mqtt.generate(packet))
}
console.log(JSON.stringify({ packets, calls }))
`

function run (env: Record<string, string>): { packets: number; calls: number; stderr: string } {
  const { DEBUG: _, ...base } = process.env
  const r = spawnSync(process.execPath, ['-e', CHILD], { env: { ...base, ...env }, encoding: 'utf8' })
  return { ...JSON.parse(r.stdout.trim().split('\n').at(-1) as string), stderr: r.stderr }
}

t.test('DEBUG unset: 101 packets parsed and written, no call reaches a logger', async (t) => {
  const r = run({})
  t.equal(r.packets, 101, 'every packet parsed')
  t.equal(r.calls, 0, 'no debug() call')
})

t.test('DEBUG=mqtt-packet:* at start: the steps are logged as before, without packet contents', async (t) => {
  const r = run({ DEBUG: 'mqtt-packet:*' })
  t.equal(r.packets, 101, 'every packet parsed')
  t.ok(r.calls > 200, `the loggers were called (${r.calls} times)`)
  t.match(r.stderr, /mqtt-packet:parser/, 'the parser logs')
  t.match(r.stderr, /mqtt-packet:writeToStream/, 'and so does writeToStream')
  t.match(r.stderr, /<\d+ bytes>/, 'contents are shown by their size')
  t.notOk(r.stderr.includes(SECRET), 'no password, username or payload in the log')
  t.notOk(r.stderr.includes(Buffer.from(SECRET).toString('hex').slice(0, 8)), 'not even as bytes')
})
