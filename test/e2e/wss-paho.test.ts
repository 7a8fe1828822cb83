// An independent WebSocket client: Python paho-mqtt 1.6 (Debian's python3-paho-mqtt) with
// transport="websockets". paho sends `Origin: https://HOST:PORT` (the broker's own address)
// unless told otherwise, so it is refused by default like any browser Origin not listed.
import t from 'tap'
import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { events, nextMessage, PASSWORD, startHarness } from '../helpers/harness.js'

const PAHO = `
import json, ssl, struct, sys, threading
import paho.mqtt.client as mqtt
host, port, ca, user, password, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
result = {"connack": None, "puback": {}}
done = threading.Event()
acks = {}
c = mqtt.Client(client_id="paho-ws-" + mode, protocol=mqtt.MQTTv5, transport="websockets")
drop_origin = lambda h: {k: v for k, v in h.items() if k != "Origin"}
c.ws_set_options(path="/mqtt", headers=drop_origin if mode == "no-origin" else None)
c.tls_set(ca_certs=ca, tls_version=ssl.PROTOCOL_TLS_CLIENT)
c.username_pw_set(user, password)
def on_connect(cl, userdata, flags, rc, properties=None):
    result["connack"] = rc.value
    if rc.value != 0:
        done.set()
        return
    acks[cl.publish("metrics/alice/Temperatura", "21.5", qos=1).mid] = "allowed"
    acks[cl.publish("metrics/bob/Temperatura", "x", qos=1).mid] = "refused"
# paho 1.6 passes no PUBACK reason code to a callback: read it from the raw packet.
orig = c._handle_pubackcomp
def handle(cmd):
    packet = c._in_packet["packet"]
    mid, = struct.unpack("!H", packet[:2])
    result["puback"][acks.get(mid, str(mid))] = packet[2] if len(packet) > 2 else 0
    if len(result["puback"]) == 2:
        done.set()
    return orig(cmd)
c._handle_pubackcomp = handle
c.on_connect = on_connect
try:
    c.connect(host, port, keepalive=30)
except Exception as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
    sys.exit(0)
c.loop_start()
ok = done.wait(8)
c.disconnect()
c.loop_stop()
print(json.dumps(result))
sys.exit(0 if ok else 3)
`

function paho (args: string[]): Promise<Record<string, any>> {
  return new Promise((resolve, reject) => {
    execFile('/usr/bin/python3', ['-c', PAHO, ...args], { timeout: 15_000 }, (err, stdout, stderr) => {
      try {
        resolve(JSON.parse(stdout.trim().split('\n').at(-1) ?? ''))
      } catch {
        reject(new Error(`paho failed (${err?.message ?? 'no output'}): ${stdout}${stderr}`))
      }
    })
  })
}

t.test('paho over websockets logs in, publishes, and is refused outside its branch; its default Origin is refused', async (t) => {
  const h = await startHarness({
    auth: { totp: { replayProtection: false } },
    listeners: [
      { type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', ca: 'certs/ca.crt' },
      { type: 'wss', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key' }
    ]
  })
  t.teardown(() => h.close())
  await h.addUser('alice')
  const port = String(h.bastion.listeners[1]?.port)
  const ca = join(h.dir, 'certs', 'ca.crt')
  const sub = await h.connect('alice', { clientId: 'alice-dash' })
  await sub.subscribeAsync('metrics/alice/#', { qos: 1 })
  const got = nextMessage(sub, 10_000)
  const ok = await paho(['127.0.0.1', port, ca, `alice|${h.code('alice')}`, PASSWORD, 'no-origin'])
  t.same(ok, { connack: 0, puback: { allowed: 0, refused: 0x87 } }, 'CONNACK 0, PUBACK 0 in its branch, 0x87 outside')
  t.match(await got, { topic: 'metrics/alice/Temperatura', payload: '21.5' }, 'delivered to the subscriber over TLS')
  t.match(events(h, 'login.ok').find((e) => e.clientId === 'paho-ws-no-origin'), { user: 'alice', remote: '127.0.0.1' })

  const refused = await paho(['127.0.0.1', port, ca, `alice|${h.code('alice')}`, PASSWORD, 'default'])
  t.match(refused, { error: /WebsocketConnectionError/ }, 'Origin https://127.0.0.1:PORT is not listed: not upgraded')
  t.match(events(h, 'wss.refused').find((e) => e.reason === 'origin'), { status: 403, origin: `https://127.0.0.1:${port}` })
})
