// The built CLI as an operator runs it: `mqtt-bastion start` as a child process with its own
// config, certificates and users in a throwaway folder; signals are real signals.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { promisify } from 'node:util'
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt'
import { initCertificates } from '../../src/certs/issue.js'
import { currentCode } from '../../src/crypto/totp.js'

const run = promisify(execFile)
export const CLI = join(process.cwd(), 'dist', 'cli', 'main.js')
export const CLI_PASSWORD = 'correct horse battery'

export interface CliBroker {
  dir: string
  proc: ChildProcess
  port: number
  ca: Buffer
  /** Every JSON log line the broker wrote so far. */
  logs: Array<Record<string, any>>
  /** Resolves with the exit code (or signal name) once the process has exited. */
  exited: Promise<number | string>
  /**
   * Resolves with the first log line with this event (and matching `match`) at index `since` or
   * later in `logs`, already written or still to come; rejects after `ms`.
   */
  waitFor (event: string, opts?: { ms?: number; since?: number; match?: (l: Record<string, any>) => boolean }): Promise<Record<string, any>>
  /** An MQTT 5 client over TLS logged in as `user` with the code `offset` steps from now. */
  connect (user: string, opts?: IClientOptions & { offset?: number }): Promise<MqttClient>
  kill (): void
}

export interface CliBrokerFolder {
  dir: string
  /** Writes the config file (listener on 127.0.0.1, a free port, file store) plus `extra` YAML lines. */
  config (extra?: string[]): string
  /** Runs `mqtt-bastion ARGS` to completion. */
  cli (...args: string[]): Promise<{ stdout: string; stderr: string; code: number }>
  /** Adds a user through the CLI; returns its TOTP secret. */
  addUser (name: string): Promise<string>
  start (configFile: string): Promise<CliBroker>
  close (): void
}

/** A folder with a CA, a server certificate (valid `certDays` days) and a default config; no users yet. */
export async function cliBrokerFolder (opts: { certDays?: number } = {}): Promise<CliBrokerFolder> {
  const dir = mkdtempSync(join(tmpdir(), 'bastion-cli-broker-'))
  await initCertificates({ outDir: join(dir, 'certs'), ...(opts.certDays === undefined ? {} : { days: opts.certDays }) })
  const secrets = new Map<string, string>()
  const brokers: ChildProcess[] = []
  const cfg = join(dir, 'bastion.yaml')

  const cli = async (...args: string[]): Promise<{ stdout: string; stderr: string; code: number }> => {
    try {
      return { ...(await run(process.execPath, [CLI, ...args], { cwd: dir, env: { ...process.env, BASTION_CONFIG: '' }, timeout: 30000 })), code: 0 }
    } catch (err: any) {
      return { stdout: err.stdout ?? '', stderr: err.stderr ?? '', code: typeof err.code === 'number' ? err.code : -1 }
    }
  }

  const folder: CliBrokerFolder = {
    dir,
    config (extra = []) {
      writeFileSync(cfg, [
        'listeners:',
        '  - type: tls',
        '    host: 127.0.0.1',
        '    port: 0',
        '    cert: certs/server.crt',
        '    key: certs/server.key',
        'auth:',
        '  store: { type: file, path: data/users.json }',
        '  workers: 1',
        // Several brokers in one file log the same users in within one 30 s step.
        '  totp: { replayProtection: false }',
        ...extra,
        ''
      ].join('\n'))
      return cfg
    },
    cli,
    async addUser (name) {
      const r = await cli('user', 'add', name, '--password', CLI_PASSWORD, '--json', '--config', cfg)
      if (r.code !== 0) throw new Error(`user add ${name}: ${r.stderr}`)
      const secret = JSON.parse(r.stdout).totpSecret as string
      secrets.set(name, secret)
      return secret
    },
    async start (configFile) {
      const proc = spawn(process.execPath, [CLI, 'start', '--config', configFile], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
      brokers.push(proc)
      const logs: Array<Record<string, any>> = []
      const waiters: Array<{ test: (l: Record<string, any>) => boolean; resolve: (l: Record<string, any>) => void }> = []
      createInterface({ input: proc.stdout! }).on('line', (line) => {
        let entry: Record<string, any>
        try { entry = JSON.parse(line) } catch { return }
        logs.push(entry)
        for (const w of waiters.filter((w) => w.test(entry))) {
          waiters.splice(waiters.indexOf(w), 1)
          w.resolve(entry)
        }
      })
      let stderr = ''
      proc.stderr!.on('data', (d: Buffer) => { stderr += d.toString() })
      const exited = new Promise<number | string>((resolve) => proc.once('exit', (code, signal) => resolve(code ?? signal ?? -1)))
      const waitFor: CliBroker['waitFor'] = async (event, { ms = 10000, since = 0, match = () => true } = {}) => {
        const test = (l: Record<string, any>): boolean => l.event === event && match(l)
        const seen = logs.slice(since).find(test)
        if (seen !== undefined) return seen
        return await new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no ${event} log line within ${ms} ms; stderr: ${stderr}`)), ms)
          waiters.push({ test, resolve: (l) => { clearTimeout(timer); resolve(l) } })
          void exited.then((code) => { clearTimeout(timer); reject(new Error(`broker exited (${code}) before ${event}; stderr: ${stderr}`)) })
        })
      }
      // A bound, not a measurement: a broker that fails exits and is reported at once; one that
      // starts slowly (2 workers on a loaded 2-core CI machine took more than 15 s) is waited for.
      const ready = await waitFor('broker.ready', { ms: 45000 })
      const port = Number(String(ready.listeners[0]).split(':').pop())
      const ca = readFileSync(join(dir, 'certs', 'ca.crt'))
      return {
        dir, proc, port, ca, logs, exited, waitFor,
        async connect (user, o = {}) {
          const { offset, ...rest } = o
          const code = currentCode(secrets.get(user) as string, Date.now() + (offset ?? 0) * 30_000)
          return await mqtt.connectAsync({
            host: '127.0.0.1', port, protocol: 'mqtts', ca, servername: 'localhost', rejectUnauthorized: true,
            reconnectPeriod: 0, connectTimeout: 10000, protocolVersion: 5,
            username: `${user}|${code}`, password: CLI_PASSWORD, ...rest
          })
        },
        kill () { proc.kill('SIGKILL') }
      }
    },
    close () {
      for (const b of brokers) b.kill('SIGKILL')
      rmSync(dir, { recursive: true, force: true })
    }
  }
  folder.config()
  return folder
}

/**
 * `user`'s device on node `a` publishes "0" … "n-1" at QoS 1 to its Temperatura leaf while its
 * dashboard on node `b` subscribes to its branch: what the dashboard got within 10 s, in order.
 */
export async function publishAcross (a: CliBroker, b: CliBroker, user: string, n: number): Promise<string[]> {
  const sub = await b.connect(user, { clientId: `${user}-dashboard` })
  await sub.subscribeAsync(`metrics/${user}/#`, { qos: 1 })
  const got: string[] = []
  const all = new Promise<void>((resolve) => {
    sub.on('message', (_topic, payload) => { got.push(payload.toString()); if (got.length === n) resolve() })
  })
  const device = await a.connect(user, { clientId: `${user}-sensor` })
  for (let i = 0; i < n; i++) await device.publishAsync(`metrics/${user}/Temperatura`, String(i), { qos: 1 })
  let timer: NodeJS.Timeout | undefined
  await Promise.race([all, new Promise((resolve) => { timer = setTimeout(resolve, 10_000) })])
  clearTimeout(timer)
  await device.endAsync()
  await sub.endAsync()
  return got
}
