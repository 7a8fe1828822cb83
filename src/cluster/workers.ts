// `start --workers N`: N broker processes on one host (node:cluster workers) sharing the
// listening ports, and through Redis everything a cluster shares (docs/cluster.md, "Several
// processes on one host"). The primary runs no broker: it starts, watches and stops workers.
import cluster, { type Worker } from 'node:cluster'
import { createInterface } from 'node:readline'
import type { BastionConfig } from '../config/schema.js'
import { passwordPoolSize } from '../crypto/password-pool.js'
import type { Logger } from '../log.js'
import { startMonitoringServer, type MonitoringServer } from '../monitoring/http.js'
import { createPrimaryMonitoring } from './worker-monitoring.js'

/** What the primary tells a worker through its environment (the CLI reads it, nothing else). */
export const WORKER_ENV = { index: 'BASTION_WORKER', count: 'BASTION_WORKERS', nodeId: 'BASTION_WORKER_NODE_ID' } as const

/** A worker's place among the others. */
export interface WorkerRole { readonly index: number; readonly count: number; readonly nodeId: string }

/** The message a worker sends once its listeners accept connections. */
export interface WorkerReady { readonly bastion: 'ready'; readonly listeners: string[] }

// A crash loop (a bad file, Redis gone for good) must end with a clear line, not fill the log:
// 5 restarts within a minute, each after twice the previous wait, then the primary gives up.
const RESTARTS_PER_MINUTE = 5
const FIRST_BACKOFF_MS = 500
// Beyond a worker's own bound (drain + 5 s, start.ts): it had its chance to exit by itself.
const STOP_MARGIN_MS = 5000
// Lines a worker writes to stderr before it is ready, kept to be shown if it fails to start.
const EARLY_LINES = 20

/**
 * The config one worker runs: its own node id (so aedes broker ids differ), its share of the
 * bcrypt threads (the host's cores are shared by all workers) and of the connection caps (set
 * for the host; node:cluster hands connections to workers in turn, so each gets about 1/N).
 * monitoring stays as set: each worker counts, and answers the primary, which serves the port
 * (worker-monitoring.ts; N processes answering it in turn would each describe only itself).
 */
export function workerConfig (config: BastionConfig, role: WorkerRole): BastionConfig {
  if (config.cluster === undefined) throw new Error('workerConfig needs cluster.redis')
  const share = (n: number): number => Math.ceil(n / role.count)
  const threads = Math.max(1, Math.floor(passwordPoolSize(config.auth.workers) / role.count))
  return {
    ...config,
    cluster: { ...config.cluster, nodeId: `${role.nodeId}-w${role.index}` },
    auth: { ...config.auth, workers: threads },
    // 0 (off) stays 0.
    limits: { ...config.limits, maxConnections: share(config.limits.maxConnections), maxConnectionsPerIp: share(config.limits.maxConnectionsPerIp) }
  }
}

interface Slot {
  readonly index: number
  worker?: Worker
  ready: boolean
  /** stderr lines written before it was ready. */
  early: string[]
  restart?: NodeJS.Timeout
}

export interface PrimaryOptions {
  readonly count: number
  /** The base of each worker's node id (`<nodeId>-w<i>`). */
  readonly nodeId: string
  /** shutdown.drainTimeout, seconds: how long workers may take to stop. */
  readonly drainTimeout: number
  readonly log: Logger
  /** Where the primary writes the one line of a fatal failure (standard error). */
  readonly fatal: (line: string) => void
  /** Ends the process (process.exit in the CLI). */
  readonly exit: (code: number) => void
  /** monitoring.host and .port when monitoring.enabled: the primary serves the workers' totals. */
  readonly monitoring?: { readonly host: string; readonly port: number }
}

/**
 * Starts the workers one after another (so first-start work, a development certificate or a new
 * SQLite schema, is done once), restarts one that dies, forwards SIGHUP, SIGINT and SIGTERM,
 * and serves /healthz and /metrics for them all. Rejects only when the monitoring port cannot
 * be bound, before any worker is started.
 */
export async function runPrimary (opts: PrimaryOptions): Promise<void> {
  const { count, log } = opts
  const slots: Slot[] = Array.from({ length: count }, (_, i) => ({ index: i + 1, ready: false, early: [] }))
  const restarts: number[] = []
  let allReadyOnce = false
  let stopping: { code: number; killed: boolean } | undefined
  let stopTimer: NodeJS.Timeout | undefined
  let monitoring: MonitoringServer | undefined

  // stderr is piped so a worker's failure line can be shown once, by the primary; stdout (the
  // JSON log) goes straight to ours.
  cluster.setupPrimary({ stdio: ['ignore', 'inherit', 'pipe', 'ipc'] })

  function fork (slot: Slot): void {
    slot.restart = undefined
    slot.ready = false
    slot.early = []
    const w = cluster.fork({ [WORKER_ENV.index]: String(slot.index), [WORKER_ENV.count]: String(count), [WORKER_ENV.nodeId]: opts.nodeId })
    slot.worker = w
    const pid = w.process.pid
    log.info({ event: 'worker.starting', worker: slot.index, pid }, `worker ${slot.index} starting`)
    if (w.process.stderr !== null) {
      createInterface({ input: w.process.stderr }).on('line', (line) => {
        if (slot.worker === w && !slot.ready) {
          slot.early.push(line)
          if (slot.early.length > EARLY_LINES) slot.early.shift()
        } else process.stderr.write(line + '\n')
      })
    }
    w.on('message', (m: Partial<WorkerReady>) => {
      if (m?.bastion !== 'ready' || slot.worker !== w) return
      slot.ready = true
      for (const line of slot.early) process.stderr.write(line + '\n')
      slot.early = []
      log.info({ event: 'worker.started', worker: slot.index, pid, listeners: m.listeners }, `worker ${slot.index} ready`)
      if (stopping !== undefined) { w.process.kill('SIGTERM'); return }
      if (allReadyOnce) return
      // Not one waiting for its restart: its timer forks it.
      const next = slots.find((s) => s.worker === undefined && s.restart === undefined)
      if (next !== undefined) { fork(next); return }
      if (!slots.every((s) => s.ready)) return
      allReadyOnce = true
      log.info({ event: 'workers.ready', workers: count, pids: slots.map((s) => s.worker?.process.pid) }, `${count} workers ready`)
    })
    // 'close' comes after the worker's stderr has been read to its end: its last line is known.
    w.process.once('close', (code: number | null, signal: NodeJS.Signals | null) => { exited(slot, w, code, signal) })
  }

  function exited (slot: Slot, w: Worker, code: number | null, signal: NodeJS.Signals | null): void {
    const wasReady = slot.ready
    slot.worker = undefined
    slot.ready = false
    // 'exitCode', not 'code': the logger blanks every 'code' field (TOTP codes).
    const entry = { event: 'worker.exited', worker: slot.index, pid: w.process.pid, exitCode: code, signal }
    if (stopping !== undefined) {
      log.info(entry, `worker ${slot.index} exited`)
      // A worker asked to stop exits 0 once drained; one still starting dies of the signal.
      if (wasReady && code !== 0) stopping.code = 1
      if (slots.every((s) => s.worker === undefined)) finish()
      return
    }
    log.error(entry, `worker ${slot.index} exited unexpectedly`)
    for (const line of slot.early) process.stderr.write(line + '\n')
    if (!wasReady && !allReadyOnce) {
      // A failure at first start (Redis unreachable, a port in use) would fail again: say why, once.
      if (slot.early.length === 0) opts.fatal(`mqtt-bastion: worker ${slot.index} exited (${signal ?? `code ${String(code)}`}) before it was ready`)
      stop('startup', 1)
      return
    }
    slot.early = []
    const now = Date.now()
    while (restarts.length > 0 && (restarts[0] as number) <= now - 60_000) restarts.shift()
    if (restarts.length >= RESTARTS_PER_MINUTE) {
      log.error({ event: 'workers.restart_limit', restarts: restarts.length }, 'workers keep dying: stopping')
      opts.fatal(`mqtt-bastion: workers exited ${restarts.length + 1} times within a minute; stopping (see the log lines before)`)
      stop('restart_limit', 1)
      return
    }
    restarts.push(now)
    const delay = FIRST_BACKOFF_MS * 2 ** (restarts.length - 1)
    log.warn({ event: 'worker.restarting', worker: slot.index, inMs: delay }, `restarting worker ${slot.index}`)
    slot.restart = setTimeout(() => { if (stopping === undefined) fork(slot) }, delay)
  }

  function live (): Worker[] {
    return slots.flatMap((s) => (s.worker === undefined || s.worker.isDead() ? [] : [s.worker]))
  }

  function finish (): void {
    clearTimeout(stopTimer)
    const code = stopping?.code ?? 1
    log.info({ event: 'workers.stopped', exitCode: code }, 'all workers stopped')
    // close() ends open scrapes too: it does not wait for them.
    void (monitoring?.close() ?? Promise.resolve()).finally(() => { log.flush(() => { opts.exit(code) }) })
  }

  function stop (reason: string, code: number): void {
    if (stopping !== undefined) {
      // A second signal: the operator will not wait for the drain.
      if (stopping.killed) return
      stopping.killed = true
      stopping.code = 1
      log.warn({ event: 'workers.killed', reason }, 'second signal: killing the workers')
      for (const w of live()) w.process.kill('SIGKILL')
      return
    }
    stopping = { code, killed: false }
    log.info({ event: 'workers.stopping', reason }, 'stopping the workers')
    for (const s of slots) clearTimeout(s.restart)
    // A signal typed at a terminal reached the workers too; a second one does them no harm.
    const signal = reason === 'SIGINT' ? 'SIGINT' : 'SIGTERM'
    for (const w of live()) w.process.kill(signal)
    stopTimer = setTimeout(() => {
      log.error({ event: 'workers.stop_timeout' }, 'workers did not stop in time: killing them')
      stopping = { code: 1, killed: true }
      for (const w of live()) w.process.kill('SIGKILL')
    }, opts.drainTimeout * 1000 + 2 * STOP_MARGIN_MS)
    if (live().length === 0) finish()
  }

  if (opts.monitoring !== undefined) {
    const served = createPrimaryMonitoring({ workers: () => slots, stopping: () => stopping !== undefined })
    monitoring = await startMonitoringServer(opts.monitoring, { ...served, log: log.child({ module: 'monitoring' }) }).catch((err: unknown) => {
      served.close()
      throw err
    })
  }
  process.on('SIGINT', () => { stop('SIGINT', 0) })
  process.on('SIGTERM', () => { stop('SIGTERM', 0) })
  // Each worker re-reads certificates, users and ACL files itself and logs its reload.ok lines.
  process.on('SIGHUP', () => {
    const ready = slots.filter((s) => s.ready && s.worker !== undefined)
    log.info({ event: 'workers.reloading', signal: 'SIGHUP', workers: ready.map((s) => s.index) }, 'reloading every worker')
    for (const s of ready) s.worker?.process.kill('SIGHUP')
  })

  const url = monitoring === undefined ? {} : { monitoring: `http://${monitoring.host}:${monitoring.port}` }
  log.info({ event: 'workers.starting', workers: count, nodeId: opts.nodeId, primary: process.pid, ...url }, `starting ${count} workers`)
  fork(slots[0] as Slot)
}

/** This process' role when the primary forked it (its environment says so), else undefined. */
export function workerRole (env: NodeJS.ProcessEnv): WorkerRole | undefined {
  const index = Number(env[WORKER_ENV.index])
  const count = Number(env[WORKER_ENV.count])
  const nodeId = env[WORKER_ENV.nodeId]
  if (!cluster.isWorker || !Number.isInteger(index) || !Number.isInteger(count) || index < 1 || index > count || nodeId === undefined || nodeId === '') return undefined
  return { index, count, nodeId }
}
