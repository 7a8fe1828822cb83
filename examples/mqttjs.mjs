// MQTT.js over TLS as a device: one login, then a metric to its own branch (accepted) and one
// to another user's branch (refused with PUBACK 0x87).
// Usage: node examples/mqttjs.mjs USER PASSWORD CODE [CA_FILE]
import { readFileSync } from 'node:fs'
import mqtt from 'mqtt'

const [user, password, code, caFile = 'certs/ca.crt'] = process.argv.slice(2)
if (code === undefined || code === '') {
  console.error('usage: node examples/mqttjs.mjs USER PASSWORD CODE [CA_FILE]')
  process.exit(2)
}

let client
try {
  client = await mqtt.connectAsync('mqtts://localhost:8883', {
    ca: readFileSync(caFile),
    protocolVersion: 5,
    username: `${user}|${code}`,
    password,
    reconnectPeriod: 0,
    properties: { sessionExpiryInterval: 0 }
  })
} catch (err) {
  console.error(`login refused: ${err.message}${typeof err.code === 'number' ? ` (CONNACK 0x${err.code.toString(16)})` : ''}`)
  process.exit(1)
}
console.log('connected')

await client.subscribeAsync(`metrics/${user}/#`, { qos: 1 })
const received = new Promise((resolve) => client.once('message', (topic, payload) => resolve(`${topic} ${payload}`)))
await client.publishAsync(`metrics/${user}/Temperatura`, JSON.stringify({ value: 22.5 }), { qos: 1 })
console.log('received:', await received)

try {
  await client.publishAsync('metrics/someone-else/Temperatura', 'spoof', { qos: 1 })
  console.log('unexpected: the broker accepted a publish to another user\'s branch')
} catch (err) {
  console.log(`refused: PUBACK reason code 0x${err.code.toString(16)}`)
}
await client.endAsync()
