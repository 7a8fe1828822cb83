// Starts a real broker over real TLS on 127.0.0.1 (a free port) in a throwaway folder.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import bcrypt from 'bcryptjs'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { pino } from 'pino'
import { createBastion, createStore, type Bastion } from '../../src/bastion.js'
import { initCertificates } from '../../src/certs/issue.js'
import { parseConfig } from '../../src/config/schema.js'
import { currentCode, newSecret } from '../../src/crypto/totp.js'
import { REDACT_PATHS } from '../../src/log.js'

export const PASSWORD = 'correct horse battery'

export interface Harness {
  dir: string
  bastion: Bastion
  port: number
  ca: Buffer
  logs: Array<Record<string, any>>
  /** Adds an enabled user with PASSWORD (bcrypt cost 4 to keep tests fast) and returns its secret. */
  addUser (name: string, opts?: { enabled?: boolean; hash?: string }): Promise<string>
  /** Registers the TOTP secret of a user created some other way (plain SQL). */
  knowSecret (name: string, secret: string): void
  /** The TOTP code for `name`, `offset` steps from now. */
  code (name: string, offset?: number): string
  /**
   * Waits until at least 12 s are left in the current 30 s step. A test that logs in with the
   * previous step's code (offset -1) calls it first: past the step's end that code leaves the
   * window, and on a loaded machine a few logins can outlast what is left of a step.
   */
  freshStep (): Promise<void>
  connect (name: string, opts?: IClientOptions & { offset?: number }): Promise<MqttClient>
  /** Connects expecting refusal; resolves with the CONNACK reason (v5) or return code (3.1.1). */
  refused (opts: IClientOptions): Promise<number>
  close (): Promise<void>
}

/** Collects the broker's pino lines so tests can assert on structured events. */
function capture (logs: Array<Record<string, any>>): Writable {
  return new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') logs.push(JSON.parse(line))
      cb()
    }
  })
}

/** `prepare` runs in the test folder after the CA and server certificate exist, before the broker starts. */
export async function startHarness (extra: Record<string, unknown> = {}, opts: { prepare?: (dir: string) => Promise<void> } = {}): Promise<Harness> {
  const { listeners, auth, ...rest } = extra as { listeners?: unknown[]; auth?: Record<string, unknown> }
  const raw = {
    listeners: listeners ?? [{ type: 'tls', host: '127.0.0.1', port: 0, cert: 'certs/server.crt', key: 'certs/server.key', ca: 'certs/ca.crt' }],
    auth: { store: { type: 'sqlite', path: 'data/users.db' }, workers: 2, ...auth },
    log: { level: 'debug' },
    ...rest
  }
  // A config the broker refuses throws here, before there is a folder to leave behind.
  parseConfig(raw, tmpdir())
  const dir = mkdtempSync(join(tmpdir(), 'bastion-test-'))
  await initCertificates({ outDir: join(dir, 'certs') })
  await opts.prepare?.(dir)
  const config = parseConfig(raw, dir)
  const logs: Array<Record<string, any>> = []
  const logger = pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, capture(logs))
  const secrets = new Map<string, string>()
  // Users are written the way the CLI writes them, into whichever store the config names.
  const store = config.auth.store.type === 'http' ? undefined : createStore(config, pino({ level: 'silent' }))
  const bastion = await createBastion(config, { logger })
  const port = bastion.listeners[0]?.port as number
  const ca = readFileSync(join(dir, 'certs', 'ca.crt'))
  const clients: MqttClient[] = []

  const base = (o: IClientOptions): IClientOptions => ({
    host: '127.0.0.1', port, protocol: 'mqtts', ca, servername: 'localhost', rejectUnauthorized: true,
    reconnectPeriod: 0, connectTimeout: 10000, protocolVersion: 5, ...o
  })
  const h: Harness = {
    dir, bastion, port, ca, logs,
    async addUser (name, opts = {}) {
      const secret = newSecret()
      secrets.set(name, secret)
      if (store === undefined) throw new Error('addUser: this harness has no local user store')
      await store.add({ username: name, passwordHash: opts.hash ?? bcrypt.hashSync(PASSWORD, 4), totpSecret: secret, enabled: opts.enabled ?? true, createdAt: new Date().toISOString() })
      return secret
    },
    knowSecret (name, secret) {
      secrets.set(name, secret)
    },
    async freshStep () {
      const left = 30_000 - (Date.now() % 30_000)
      if (left < 12_000) await new Promise((resolve) => setTimeout(resolve, left + 100))
    },
    code (name, offset = 0) {
      return currentCode(secrets.get(name) as string, Date.now() + offset * 30_000)
    },
    async connect (name, opts = {}) {
      const { offset, ...o } = opts
      const c = await mqtt.connectAsync(base({ username: o.username ?? `${name}|${h.code(name, offset)}`, password: PASSWORD, ...o }))
      clients.push(c)
      return c
    },
    refused (opts) {
      return new Promise((resolve, reject) => {
        const c = mqtt.connect(base(opts))
        clients.push(c)
        const timer = setTimeout(() => { c.end(true); reject(new Error('no CONNACK within 10 s')) }, 10000)
        c.on('connect', () => { clearTimeout(timer); c.end(true); reject(new Error('connection was accepted')) })
        c.on('error', (err: any) => { clearTimeout(timer); c.end(true); resolve(err.code as number) })
      })
    },
    async close () {
      await Promise.all(clients.map(async (c) => await c.endAsync(true).catch(() => {})))
      await bastion.close()
      await store?.close()
      rmSync(dir, { recursive: true, force: true })
    }
  }
  return h
}

/** Resolves with the next message on `topic`, or undefined after `ms`. */
export function nextMessage (c: MqttClient, ms = 2000): Promise<{ topic: string; payload: string; packet: any } | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => { c.off('message', on); resolve(undefined) }, ms)
    function on (topic: string, payload: Buffer, packet: any): void {
      clearTimeout(timer)
      c.off('message', on)
      resolve({ topic, payload: payload.toString(), packet })
    }
    c.on('message', on)
  })
}

export function events (h: Harness, name: string): Array<Record<string, any>> {
  return h.logs.filter((l) => l.event === name)
}

/** The SUBACK code for one filter: the granted QoS, or the refusal (0x80 / 0x87). */
export function subackCode (c: MqttClient, filter: string, qos: 0 | 1 | 2 = 1): Promise<number> {
  return new Promise((resolve, reject) => {
    c.subscribe(filter, { qos }, (err: any, granted) => {
      // mqtt.js reports a refused v5 subscription as an error carrying the SUBACK.
      const codes = err?.packet?.granted ?? granted?.map((g) => g.qos)
      if (codes === undefined) reject(err ?? new Error('no SUBACK'))
      else resolve(codes[0] as number)
    })
  })
}

/** The PUBACK reason code of a QoS 1 publish: 0 for success, 0x87 when refused. */
export function pubackCode (c: MqttClient, topic: string, payload: string): Promise<number> {
  return new Promise((resolve, reject) => {
    c.publish(topic, payload, { qos: 1 }, (err: any, packet: any) => {
      if (err !== undefined && err !== null) {
        if (typeof err.code === 'number') resolve(err.code)
        else reject(err)
      } else {
        resolve(packet?.reasonCode ?? 0)
      }
    })
  })
}
