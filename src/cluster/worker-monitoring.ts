// `start --workers N` with monitoring.enabled: each worker counts, the primary serves the port
// (src/monitoring/http.ts, as one broker does) with the host's totals. /metrics goes through
// prom-client's AggregatorRegistry and its own IPC messages; /healthz asks each worker its
// health check (src/monitoring/health.ts) over ours.
import cluster, { type Worker } from 'node:cluster'
import { AggregatorRegistry } from 'prom-client'
import type { HealthCheck } from '../monitoring/health.js'
import type { MetricsSource } from '../monitoring/http.js'
import type { BrokerMetrics } from '../monitoring/metrics.js'

/** Primary → worker: run your health check. */
interface HealthProbe { readonly bastion: 'healthz'; readonly id: number }
/** Worker → primary: its answer (undefined problem: healthy). */
interface HealthAnswer { readonly bastion: 'health'; readonly id: number; readonly problem?: string }

// A worker's own store ping is bounded at 1 s (health.ts); past twice that it is stuck.
const HEALTH_TIMEOUT_MS = 2000

/**
 * In a worker, instead of a monitoring server: prom-client answers the primary's scrapes with
 * this broker's registry (by default it would answer with its global registry, which we never
 * use; the setting is per process, and a worker runs one broker), and we answer health probes.
 */
export async function answerPrimary (deps: { metrics: BrokerMetrics; health: HealthCheck }): Promise<{ close (): Promise<void> }> {
  AggregatorRegistry.setRegistries(deps.metrics.registry)
  // Its constructor adds prom-client's IPC listener (once per process).
  void new AggregatorRegistry()
  const reply = (answer: HealthAnswer): void => {
    // With a callback a closed channel (the primary gone) is not an 'error' event on process.
    if (process.connected) process.send?.(answer, undefined, undefined, () => {})
  }
  const onMessage = (m: Partial<HealthProbe> | null): void => {
    if (m?.bastion !== 'healthz' || typeof m.id !== 'number') return
    const id = m.id
    deps.health().then(
      (problem) => { reply({ bastion: 'health', id, ...(problem === undefined ? {} : { problem }) }) },
      (err: unknown) => { reply({ bastion: 'health', id, problem: `health check failed: ${(err as Error).message}` }) })
  }
  process.on('message', onMessage)
  return {
    async close () { process.off('message', onMessage) }
  }
}

/** A worker slot as the primary sees it. */
export interface WorkerView {
  readonly index: number
  /** Its listeners accept (it sent its ready message). */
  readonly ready: boolean
  /** Undefined between its exit and its restart. */
  readonly worker?: Pick<Worker, 'isConnected' | 'send'>
}

/** Which workers cannot answer now (one line), or undefined when all can. */
export function notReady (workers: readonly WorkerView[]): string | undefined {
  const why = workers.flatMap((w) => {
    if (w.worker === undefined) return [`worker ${w.index} is not ready (exited, restarting)`]
    if (!w.ready) return [`worker ${w.index} is not ready (starting)`]
    // Dead before its exit was seen: prom-client would skip it and sum the others only.
    if (!w.worker.isConnected()) return [`worker ${w.index} is not ready (disconnected)`]
    return []
  })
  return why.length === 0 ? undefined : why.join(', ')
}

export interface PrimaryMonitoringOptions {
  /** The worker slots now. */
  readonly workers: () => readonly WorkerView[]
  /** The primary is stopping its workers. */
  readonly stopping: () => boolean
  /** How long a worker may take to answer a health probe; default 2 s. */
  readonly healthTimeoutMs?: number
}

export interface PrimaryMonitoring {
  readonly metrics: MetricsSource
  readonly health: HealthCheck
  close (): void
}

/**
 * What the primary serves. A scrape or probe while a worker is starting or restarting answers
 * 503 with that at once: a sum without that worker would look like a counter reset and back.
 * A worker that does not answer a scrape within prom-client's bound (5 s) makes it 503 too.
 */
export function createPrimaryMonitoring (opts: PrimaryMonitoringOptions): PrimaryMonitoring {
  const timeoutMs = opts.healthTimeoutMs ?? HEALTH_TIMEOUT_MS
  const aggregator = new AggregatorRegistry()
  const waiting = new Map<number, { worker: WorkerView['worker']; resolve: (problem: string | undefined) => void }>()
  let nextId = 0
  let inFlight: Promise<string | undefined> | undefined
  let scraping: Promise<string> | undefined

  const onMessage = (_worker: Worker, m: Partial<HealthAnswer> | null): void => {
    if (m?.bastion !== 'health' || typeof m.id !== 'number') return
    waiting.get(m.id)?.resolve(typeof m.problem === 'string' ? m.problem : undefined)
  }
  // A worker killed after it was asked will not answer: no need to wait out the bound.
  const onDisconnect = (worker: Worker): void => {
    for (const w of waiting.values()) if (w.worker === worker) w.resolve('disconnected')
  }
  cluster.on('message', onMessage)
  cluster.on('disconnect', onDisconnect)

  async function probe (worker: NonNullable<WorkerView['worker']>): Promise<string | undefined> {
    const id = nextId++
    let timer: NodeJS.Timeout | undefined
    try {
      return await new Promise<string | undefined>((resolve) => {
        waiting.set(id, { worker, resolve })
        timer = setTimeout(() => { resolve(`no answer within ${timeoutMs} ms`) }, timeoutMs)
        const probe: HealthProbe = { bastion: 'healthz', id }
        worker.send(probe, undefined, undefined, (err) => { if (err !== null) resolve(`unreachable: ${err.message}`) })
      })
    } finally {
      clearTimeout(timer)
      waiting.delete(id)
    }
  }

  async function check (): Promise<string | undefined> {
    const workers = opts.workers()
    const problem = notReady(workers)
    if (problem !== undefined) return problem
    const answers = await Promise.all(workers.map(async (w) => await probe(w.worker as NonNullable<WorkerView['worker']>)))
    // A worker gone meanwhile: its state says more than 'disconnected' or a timeout.
    const now = notReady(opts.workers())
    if (now !== undefined) return now
    const i = answers.findIndex((a) => a !== undefined)
    return i === -1 ? undefined : `worker ${(workers[i] as WorkerView).index}: ${answers[i] as string}`
  }

  return {
    metrics: {
      contentType: aggregator.contentType,
      async text () {
        const problem = notReady(opts.workers())
        if (problem !== undefined) return { unavailable: problem }
        try {
          // Shared like the health probe: a burst of scrapes asks each worker once, not once
          // per request (prom-client keeps a record of each request that times out).
          scraping ??= aggregator.clusterMetrics().finally(() => { scraping = undefined })
          return await scraping
        } catch (err) {
          // prom-client: 'Operation timed out.', or a worker's own error.
          return { unavailable: `not every worker answered: ${(err as Error).message}` }
        }
      }
    },
    async health () {
      if (opts.stopping()) return 'stopping'
      // Shared as in health.ts: a burst of requests costs one probe per worker.
      inFlight ??= check().finally(() => { inFlight = undefined })
      return await inFlight
    },
    close () {
      cluster.off('message', onMessage)
      cluster.off('disconnect', onDisconnect)
    }
  }
}
