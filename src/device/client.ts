import mqtt, { type MqttClient } from 'mqtt'
import { currentCode } from '../crypto/totp.js'
import type { DeviceConfig } from './config.js'
import { reasonText } from './reasons.js'

/** A failure worth one line on stderr; its message never holds the password, code or secret. */
export class DeviceError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'DeviceError'
  }
}

export interface Reading { readonly topic: string; readonly payload: string }

type Log = (line: string) => void

/** One timer for the whole run, so a cron job can never hang past `timeout` seconds. */
function deadline (seconds: number): { race: <T>(p: Promise<T>, what: string) => Promise<T>; clear: () => void } {
  const timers = new Set<NodeJS.Timeout>()
  const end = Date.now() + seconds * 1000
  return {
    async race (p, what) {
      let timer: NodeJS.Timeout | undefined
      const expired = new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => { reject(new DeviceError(`${what} within ${seconds} s`)) }, Math.max(0, end - Date.now()))
        timers.add(timer)
      })
      try {
        return await Promise.race([p, expired])
      } finally {
        clearTimeout(timer)
      }
    },
    clear () { for (const t of timers) clearTimeout(t) }
  }
}

/** Ends without DISCONNECT (the broker then sends the will); mqtt.js leaves a socket still in its TLS handshake open. */
function abort (client: MqttClient): void {
  client.end(true)
  client.stream?.destroy()
}

function willTopic (cfg: DeviceConfig): string {
  return `${cfg.prefix}/${cfg.user}/Estado`
}

function connectFailure (cfg: DeviceConfig, err: any): DeviceError {
  if (typeof err?.code === 'number') {
    // With a username always sent, 0x87 at CONNECT means the will (`prefix`/user/Estado) is
    // outside what this user may publish: say which topic, or the user hunts a password problem.
    const why = err.code === 0x87 ? ` (the will topic ${willTopic(cfg)} is outside what ${cfg.user} may publish: check prefix)` : ''
    return new DeviceError(`login refused: ${reasonText(err.code as number)}${why}`)
  }
  const code = typeof err?.code === 'string' ? err.code as string : undefined
  // Socket errno codes say it all (ECONNREFUSED); TLS codes are cryptic without their message.
  const detail = code === undefined ? String(err?.message ?? err) : /^E[A-Z]+$/.test(code) ? code : `${String(err.message)} (${code})`
  return new DeviceError(`cannot connect to ${cfg.url}: ${detail}`)
}

/** The client at once (so a deadline can abort it), and `ready` when the CONNACK is a success. */
function connect (cfg: DeviceConfig): { client: MqttClient; ready: Promise<void> } {
  const username = cfg.totpSecret === undefined ? cfg.user : `${cfg.user}|${currentCode(cfg.totpSecret)}`
  const client = mqtt.connect({
    protocol: 'mqtts',
    host: cfg.host,
    port: cfg.port,
    ca: cfg.ca,
    ...(cfg.cert === undefined ? {} : { cert: cfg.cert }),
    ...(cfg.key === undefined ? {} : { key: cfg.key }),
    rejectUnauthorized: true,
    protocolVersion: 5,
    clean: true,
    reconnectPeriod: 0,
    // Our own deadline fires first and names the phase; this is only a backstop.
    connectTimeout: cfg.timeout * 1000 + 1000,
    clientId: cfg.clientId,
    username,
    password: cfg.password,
    properties: { sessionExpiryInterval: 0 },
    // Sent by the broker only if this run ends without a DISCONNECT (killed, power cut, link lost).
    will: { topic: willTopic(cfg), payload: Buffer.from(cfg.willPayload), qos: 1, retain: false }
  })
  const ready = new Promise<void>((resolve, reject) => {
    const fail = (err: DeviceError): void => {
      client.removeListener('connect', onConnect)
      client.removeListener('error', onError)
      client.removeListener('close', onClose)
      // Without a listener an 'error' event would crash the process; it is reported already.
      client.on('error', () => {})
      abort(client)
      reject(err)
    }
    const onError = (err: unknown): void => { fail(connectFailure(cfg, err)) }
    const onClose = (): void => { fail(new DeviceError(`cannot connect to ${cfg.url}: connection closed before CONNACK`)) }
    const onConnect = (): void => {
      client.removeListener('error', onError)
      client.removeListener('close', onClose)
      resolve()
    }
    client.once('connect', onConnect)
    client.on('error', onError)
    client.once('close', onClose)
  })
  return { client, ready }
}

/**
 * Rejects when the broker ends the session before we do (DISCONNECT packet or dropped socket).
 * `disarm` before our own DISCONNECT: the close that follows it is the expected end.
 */
function lost (client: MqttClient, what: string): { promise: Promise<never>; disarm: () => void } {
  let armed = true
  const promise = new Promise<never>((_resolve, reject) => {
    let reason = ''
    client.on('disconnect', (packet) => { reason = `: broker sent DISCONNECT ${reasonText(packet.reasonCode ?? 0)}` })
    client.on('error', (err: any) => { if (reason === '') reason = `: ${String(err?.code ?? err?.message ?? err)}` })
    client.once('close', () => { if (armed) reject(new DeviceError(`connection lost ${what}${reason}`)) })
  })
  promise.catch(() => {})
  return { promise, disarm: () => { armed = false } }
}

function puback (client: MqttClient, r: Reading): Promise<{ topic: string; code: number }> {
  return new Promise((resolve, reject) => {
    client.publish(r.topic, r.payload, { qos: 1 }, (err: any, packet: any) => {
      if (err === undefined || err === null) resolve({ topic: r.topic, code: packet?.reasonCode ?? 0 })
      else if (typeof err.code === 'number') resolve({ topic: r.topic, code: err.code })
      else reject(new DeviceError(`publish to ${r.topic} failed: ${String(err.message)}`))
    })
  })
}

/** Publishes every reading at QoS 1 and resolves only when each PUBACK is a success. */
export async function publishReadings (cfg: DeviceConfig, readings: readonly Reading[], log: Log): Promise<void> {
  const limit = deadline(cfg.timeout)
  let client: MqttClient | undefined
  let ended = false
  try {
    const session = connect(cfg)
    client = session.client
    const c = client
    await limit.race(session.ready, `no CONNACK from ${cfg.url}`)
    log(`connected to ${cfg.url} as ${cfg.user} (client id ${cfg.clientId})`)
    const gone = lost(c, 'before every PUBACK arrived')
    const acks = await limit.race(Promise.race([Promise.all(readings.map(async (r) => await puback(c, r))), gone.promise]), 'no PUBACK')
    for (const a of acks) log(`PUBACK ${reasonText(a.code)} for ${a.topic}`)
    // A refused reading still ends with a DISCONNECT: the device is fine, so no will.
    gone.disarm()
    await limit.race(c.endAsync(false), 'no clean DISCONNECT')
    ended = true
    log('disconnected')
    const refused = acks.find((a) => a.code >= 0x80)
    if (refused !== undefined) throw new DeviceError(`publish to ${refused.topic} refused: ${reasonText(refused.code)}`)
  } finally {
    limit.clear()
    if (client !== undefined && !ended) abort(client)
  }
}

export interface SubscribeOptions {
  readonly filter: string
  /** Stop after this many messages; absent: until `signal` aborts. */
  readonly count?: number
  readonly signal: AbortSignal
  readonly onMessage: (topic: string, payload: Buffer) => void
  readonly log: Log
}

export async function subscribe (cfg: DeviceConfig, opts: SubscribeOptions): Promise<void> {
  const limit = deadline(cfg.timeout)
  let client: MqttClient | undefined
  try {
    const session = connect(cfg)
    client = session.client
    const c = client
    await limit.race(session.ready, `no CONNACK from ${cfg.url}`)
    opts.log(`connected to ${cfg.url} as ${cfg.user} (client id ${cfg.clientId})`)
    const gone = lost(c, 'while subscribed')
    let seen = 0
    const done = new Promise<void>((resolve) => {
      if (opts.signal.aborted) resolve()
      opts.signal.addEventListener('abort', () => { resolve() }, { once: true })
      c.on('message', (topic, payload) => {
        if (opts.count !== undefined && seen >= opts.count) return
        seen++
        opts.onMessage(topic, payload)
        if (opts.count !== undefined && seen >= opts.count) resolve()
      })
    })
    const granted = await limit.race(Promise.race([suback(c, opts.filter), gone.promise]), 'no SUBACK')
    if (granted < 0x80) {
      limit.clear()
      opts.log(`subscribed to ${opts.filter} (QoS ${granted})`)
      await Promise.race([done, gone.promise])
    }
    // A refused filter is a usage problem, not an unsafe disconnection: no will.
    gone.disarm()
    await deadline(cfg.timeout).race(c.endAsync(false), 'no clean DISCONNECT')
    client = undefined
    opts.log('disconnected')
    if (granted >= 0x80) throw new DeviceError(`subscribe to ${opts.filter} refused: ${reasonText(granted)}`)
  } finally {
    limit.clear()
    if (client !== undefined) abort(client)
  }
}

function suback (client: MqttClient, filter: string): Promise<number> {
  return new Promise((resolve, reject) => {
    client.subscribe(filter, { qos: 1 }, (err: any, granted) => {
      // mqtt.js reports a refused v5 subscription as an error carrying the SUBACK.
      const code = err?.packet?.granted?.[0] ?? (typeof err?.code === 'number' ? err.code : undefined) ?? granted?.[0]?.qos
      if (typeof code === 'number') resolve(code)
      else reject(new DeviceError(`subscribe to ${filter} failed: ${String(err?.message ?? 'no SUBACK')}`))
    })
  })
}
