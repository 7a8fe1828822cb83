import { resolve } from 'node:path'
import { publishReadings, subscribe, DeviceError, type Reading } from '../device/client.js'
import { loadDeviceConfig } from '../device/config.js'
import { expectPositionals, intFlag, parse, stringFlag, UsageError } from './args.js'

export const DEVICE_HELP = `Usage:
  mqtt-bastion device publish --config FILE [--temperature N] [--humidity N] [--status TEXT] [--verbose]
  mqtt-bastion device subscribe --config FILE [--topic FILTER] [--count N] [--verbose]

The device side: logs in as USER|CODE (CODE: the current TOTP code computed from the
secret) over TLS with MQTT 5, a clean session (Session Expiry 0) and a last will
(QoS 1, not retained) on PREFIX/USER/Estado, sent by the broker only if the run ends
without a clean DISCONNECT.

  publish       Publishes each reading at QoS 1 as {"value":...} to PREFIX/USER/Temperatura,
                .../Humedad and .../Estado, waits for every PUBACK, then disconnects.
                Prints nothing on success. At least one reading.
  subscribe     Subscribes to FILTER (default PREFIX/USER/#) at QoS 1 and prints one
                "topic payload" line per message (control characters as \\xNN). Runs
                until --count N messages arrived, or until SIGINT/SIGTERM.
  --verbose     Also print connection steps and PUBACK codes, never secrets
                (publish: on stdout; subscribe: on stderr).

Config file (YAML; relative paths resolve against its folder):
  url: mqtts://broker.example.com:8883
  ca: ca.crt                    # the CA that signed the broker certificate
  # cert: device.crt            # client certificate, when the listener asks for one
  # key: device.key             # (mode 0600)
  user: sensor-01
  passwordFile: password        # first line; or password: ... (then this file must be 0600)
  totpSecretFile: totp-secret   # base32; or totpSecret: ...; omit both if no code is asked
  # clientId: sensor-01-a       # default: USER-<random>
  # prefix: metrics             # the broker's acl.metrics.prefix
  # will: { payload: unsafe_disconnection }
  # timeout: 10                 # seconds for the whole run
Files holding a password, secret or key must not be readable by group or others
(chmod 600 FILE); the command refuses them otherwise.

Cron (absolute paths; every 5 minutes, a Linux board's CPU temperature in degrees):
  */5 * * * * /usr/bin/node /opt/mqtt-bastion/dist/cli/main.js device publish --config /etc/mqtt-bastion/device.yaml --temperature "$(awk '{print $1/1000}' /sys/class/thermal/thermal_zone0/temp)"

A code is accepted once (replay protection): one login per user per 30 s.
Exit status: 0 when every PUBACK was a success (subscribe: clean end); 1 with one line on
stderr (login refused, publish/subscribe refused, cannot connect, timeout, bad config);
2 on a usage error.
`

const NUMBER = /^-?\d+(\.\d+)?$/

function numberFlag (values: Record<string, unknown>, name: string): number | undefined {
  const v = stringFlag(values, name)
  if (v === undefined) return undefined
  if (!NUMBER.test(v.trim())) throw new UsageError(`--${name} must be a number such as 22.5, got "${v}"`)
  return Number(v)
}

function readings (values: Record<string, unknown>, prefix: string, user: string): Reading[] {
  const temperature = numberFlag(values, 'temperature')
  const humidity = numberFlag(values, 'humidity')
  const status = stringFlag(values, 'status')
  if (status !== undefined && (status === '' || status.length > 256)) throw new UsageError('--status must be 1-256 characters')
  const out: Reading[] = []
  const add = (leaf: string, value: number | string | undefined): void => {
    if (value !== undefined) out.push({ topic: `${prefix}/${user}/${leaf}`, payload: JSON.stringify({ value }) })
  }
  add('Temperatura', temperature)
  add('Humedad', humidity)
  add('Estado', status)
  return out
}

/** Topic and payload on one line; control characters escaped so a peer cannot drive the terminal. */
function line (topic: string, payload: Buffer): string {
  // eslint-disable-next-line no-control-regex
  const safe = (s: string): string => s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`)
  return `${safe(topic)} ${safe(payload.toString('utf8'))}\n`
}

export async function deviceCommand (argv: string[], out: (s: string) => void): Promise<void> {
  const [sub, ...rest] = argv
  if (sub === undefined || sub === '--help' || sub === '-h') { out(DEVICE_HELP); return }
  if (sub !== 'publish' && sub !== 'subscribe') throw new UsageError(`unknown device command: ${sub} (see mqtt-bastion device --help)`)
  const { values, positionals } = parse(rest, {
    config: { type: 'string' },
    temperature: { type: 'string' },
    humidity: { type: 'string' },
    status: { type: 'string' },
    topic: { type: 'string' },
    count: { type: 'string' },
    verbose: { type: 'boolean' }
  })
  if (values.help === true) { out(DEVICE_HELP); return }
  expectPositionals(positionals, [])
  const flags = sub === 'publish' ? ['config', 'temperature', 'humidity', 'status', 'verbose'] : ['config', 'topic', 'count', 'verbose']
  for (const k of Object.keys(values)) {
    if (values[k] !== undefined && !flags.includes(k)) throw new UsageError(`device ${sub} does not take --${k}`)
  }
  const file = stringFlag(values, 'config')
  if (file === undefined) throw new UsageError(`device ${sub} needs --config FILE`)
  // subscribe's stdout is data, so its progress lines go to stderr.
  const log = values.verbose !== true ? () => {} : sub === 'publish' ? (s: string) => { out(s + '\n') } : (s: string) => { process.stderr.write(s + '\n') }

  if (sub === 'publish') {
    // Flags are checked before the config is read, so a usage error never costs a login.
    const probe = readings(values, 'p', 'u')
    if (probe.length === 0) throw new UsageError('device publish needs at least one of --temperature, --humidity, --status')
    const cfg = await loadDeviceConfig(resolve(file))
    await run(async () => { await publishReadings(cfg, readings(values, cfg.prefix, cfg.user), log) })
    return
  }

  const count = intFlag(values, 'count', 1, 1_000_000)
  const cfg = await loadDeviceConfig(resolve(file))
  const stop = new AbortController()
  const onSignal = (): void => { stop.abort() }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    await run(async () => {
      await subscribe(cfg, {
        filter: stringFlag(values, 'topic') ?? `${cfg.prefix}/${cfg.user}/#`,
        ...(count === undefined ? {} : { count }),
        signal: stop.signal,
        onMessage: (topic, payload) => { out(line(topic, payload)) },
        log
      })
    })
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}

/** A DeviceError is an expected outcome: one line and exit 1, without a stack. */
async function run (fn: () => Promise<void>): Promise<void> {
  try {
    await fn()
  } catch (err) {
    if (!(err instanceof DeviceError)) throw err
    process.stderr.write(`mqtt-bastion: ${err.message}\n`)
    process.exitCode = 1
  }
}
