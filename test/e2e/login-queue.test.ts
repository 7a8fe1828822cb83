// A full login queue over real TLS: MQTT 5 clients (mqtt.js, paho, mosquitto_pub) get CONNACK
// 0x89 "Server busy", 3.1.1 clients return code 3, and nobody waits for a slot past maxWaiting.
import t from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import bcrypt from 'bcryptjs'
import mqtt, { type IClientOptions } from 'mqtt'
import { startGoAuthService, type GoAuthService } from '../helpers/go-auth-service.js'
import { events, PASSWORD, startHarness, type Harness } from '../helpers/harness.js'

/** Connects once; resolves 'ok' on CONNACK 0, else the refusal code. Bounded by 15 s. */
function attempt (h: Harness, o: IClientOptions): Promise<'ok' | number> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({
      host: '127.0.0.1', port: h.port, protocol: 'mqtts', ca: h.ca, servername: 'localhost',
      reconnectPeriod: 0, connectTimeout: 15_000, protocolVersion: 5, ...o
    })
    const timer = setTimeout(() => { c.end(true); reject(new Error('no CONNACK within 15 s')) }, 15_000)
    c.on('connect', () => { clearTimeout(timer); c.end(true); resolve('ok') })
    c.on('error', (err: any) => { clearTimeout(timer); c.end(true); resolve(err.code as number) })
  })
}

function run (cmd: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 10_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, out: stdout + stderr })
    })
  })
}

// paho 1.6 (Debian's python3-paho-mqtt): prints the CONNACK reason code it was given.
const PAHO = `
import ssl, sys, threading
import paho.mqtt.client as mqtt
host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
done = threading.Event()
def on_connect(c, userdata, flags, rc, properties=None):
    print(rc.value)
    done.set()
c = mqtt.Client(client_id="paho-busy", protocol=mqtt.MQTTv5)
c.tls_set(ca_certs=ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
c.username_pw_set("alice|123456", "pw")
c.on_connect = on_connect
c.connect(host, port)
c.loop_start()
sys.exit(0 if done.wait(8) else 2)
`

t.test('while the only slot is taken, every client is told the server is busy', async (t) => {
  // An auth service that takes 8 s for `slow`: its login holds the one slot that long, longer
  // than python3 and mosquitto_pub take to start and connect on a loaded machine (3 s was not).
  const svc: GoAuthService = await startGoAuthService((r) => {
    const slow = String(r.fields.username ?? '').startsWith('slow|')
    return { body: JSON.stringify({ Ok: true, Error: '' }), ...(slow ? { delayMs: 8000 } : {}) }
  })
  const h = await startHarness({ auth: { store: { type: 'http', url: svc.url, timeout: 10_000 }, loginQueue: { concurrency: 1, maxWaiting: 0 } } })
  t.teardown(async () => {
    await h.close()
    await svc.close()
  })
  const holder = attempt(h, { username: 'slow|123456', password: 'pw', clientId: 'holder' })
  for (let i = 0; i < 100 && svc.hits('/auth/user') === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20))
  t.equal(svc.hits('/auth/user'), 1, 'the slow login holds the slot')

  const ca = join(h.dir, 'certs', 'ca.crt')
  const [v5, v311, pub, paho] = await Promise.all([
    attempt(h, { username: 'alice|123456', password: 'pw', clientId: 'v5' }),
    attempt(h, { username: 'alice|123456', password: 'pw', clientId: 'v311', protocolVersion: 4 }),
    run('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(h.port), '--cafile', ca, '-V', 'mqttv5', '-i', 'mosq-busy',
      '-u', 'alice|123456', '-P', 'pw', '-t', 'metrics/alice/Temperatura', '-m', '1']),
    run('/usr/bin/python3', ['-c', PAHO, '127.0.0.1', String(h.port), ca])
  ])
  t.equal(v5, 0x89, 'mqtt.js MQTT 5: 0x89 server busy')
  t.equal(v311, 3, 'mqtt.js 3.1.1: 3 server unavailable')
  t.not(pub.code, 0, 'mosquitto_pub fails')
  t.match(pub.out, /server busy/i, 'mosquitto_pub names the reason')
  t.equal(paho.out.trim(), String(0x89), 'paho MQTT 5: 137')
  t.equal(svc.hits('/auth/user'), 1, 'no refused login reached the auth service')
  t.equal(events(h, 'login.failed').filter((e) => e.reason === 'server_busy').length, 1,
    'four refusals from one address: logged once a minute, not once each')

  t.equal(await holder, 'ok', 'the login holding the slot completes')
  t.equal(await attempt(h, { username: 'alice|123456', password: 'pw', clientId: 'after' }), 'ok', 'the freed slot takes the next login')
})

t.test('a burst of bcrypt logins: each one is accepted or told busy, none hangs', async (t) => {
  const h = await startHarness({ auth: { loginQueue: { concurrency: 1, maxWaiting: 1 } } })
  t.teardown(() => h.close())
  // Cost 12 like production: each login holds the slot for a few hundred milliseconds.
  const hash = bcrypt.hashSync(PASSWORD, 12)
  const names = Array.from({ length: 8 }, (_, i) => `dev${i}`)
  for (const n of names) await h.addUser(n, { hash })
  const results = await Promise.all(names.map(async (n, i) => {
    const protocolVersion = i % 2 === 0 ? 5 : 4
    return { protocolVersion, r: await attempt(h, { username: `${n}|${h.code(n)}`, password: PASSWORD, clientId: n, protocolVersion }) }
  }))
  const busy = results.filter((x) => x.r !== 'ok')
  t.ok(results.some((x) => x.r === 'ok'), 'some logins succeed')
  t.ok(busy.length >= 1, `${busy.length} of 8 told busy`)
  t.same(busy.filter((x) => x.r !== (x.protocolVersion === 5 ? 0x89 : 3)), [], 'every refusal is server busy (0x89 / 3)')
  t.equal(events(h, 'login.failed').filter((e) => e.reason === 'server_busy').length, 1, 'logged once for the address')
})
