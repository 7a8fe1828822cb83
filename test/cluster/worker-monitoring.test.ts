// What a `start --workers` primary serves, without processes: the workers' registries merged
// (counters and connected clients summed, a certificate's expiry not), and /healthz and /metrics
// refusing at once while a worker is not ready, naming it; probes bounded and shared.
import t from 'tap'
import cluster from 'node:cluster'
import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Aedes } from 'aedes'
import { AggregatorRegistry } from 'prom-client'
import { initCertificates } from '../../src/certs/issue.js'
import { createPrimaryMonitoring, notReady, type WorkerView } from '../../src/cluster/worker-monitoring.js'
import { createMetrics, type BrokerMetrics } from '../../src/monitoring/metrics.js'
import { scratch } from '../helpers/scratch.js'
import { sample } from '../helpers/prometheus.js'

const folder = scratch('bastion-worker-monitoring-')

/** A worker's metrics with `logins` logins, `clients` connected and a certificate valid `days`. */
async function worker (logins: number, clients: number, days: number): Promise<{ metrics: BrokerMetrics; expiry: number }> {
  const metrics = createMetrics({ totpWindow: 1, processMetrics: false })
  metrics.attach({ connectedClients: clients, on () {} } as unknown as Aedes)
  for (let i = 0; i < logins; i++) metrics.onEvent({ type: 'login.ok' } as Parameters<BrokerMetrics['onEvent']>[0])
  const dir = folder()
  await initCertificates({ outDir: dir, days })
  const cert = join(dir, 'server.crt')
  metrics.certificate('tls://127.0.0.1:8883', cert)
  return { metrics, expiry: Math.floor(new Date(new X509Certificate(readFileSync(cert)).validTo).getTime() / 1000) }
}

t.test('merged as the primary merges them: logins and connected clients summed, the sooner certificate expiry', async (t) => {
  const a = await worker(3, 2, 30)
  const b = await worker(4, 1, 60)
  const text = await AggregatorRegistry.aggregate([await a.metrics.registry.getMetricsAsJSON(), await b.metrics.registry.getMetricsAsJSON()]).metrics()
  t.equal(sample(text, 'bastion_logins_total', { result: 'ok', reason: 'none' }), 7)
  t.equal(sample(text, 'bastion_connected_clients'), 3)
  t.ok(a.expiry < b.expiry, 'the two workers read different expiries')
  t.equal(sample(text, 'bastion_certificate_expiry_timestamp_seconds', { listener: 'tls://127.0.0.1:8883' }), a.expiry)
})

const connected = { isConnected: () => true, send: () => true }

t.test('a worker not ready is named, with why', async (t) => {
  t.equal(notReady([{ index: 1, ready: true, worker: connected }, { index: 2, ready: true, worker: connected }]), undefined)
  t.equal(notReady([{ index: 1, ready: true, worker: connected }, { index: 2, ready: false }]), 'worker 2 is not ready (exited, restarting)')
  t.equal(notReady([{ index: 1, ready: false, worker: connected }, { index: 2, ready: true, worker: { ...connected, isConnected: () => false } }]),
    'worker 1 is not ready (starting), worker 2 is not ready (disconnected)')
})

/** A worker that answers health probes with `problem`, or never when `silent`. */
function answering (index: number, answer: { problem?: string; silent?: boolean }, asked: number[]): WorkerView {
  const w = {
    isConnected: () => true,
    send (probe: { id: number }, _handle: unknown, _options: unknown, done: (err: Error | null) => void) {
      asked.push(index)
      done(null)
      if (answer.silent !== true) setImmediate(() => cluster.emit('message', w, { bastion: 'health', id: probe.id, ...(answer.problem === undefined ? {} : { problem: answer.problem }) }))
      return true
    }
  }
  return { index, ready: true, worker: w as unknown as WorkerView['worker'] }
}

t.test('/healthz: ok when every worker answers ok, else the first problem with its worker; probes shared and bounded', async (t) => {
  const asked: number[] = []
  let workers: WorkerView[] = [answering(1, {}, asked), answering(2, {}, asked)]
  let stopping = false
  const m = createPrimaryMonitoring({ workers: () => workers, stopping: () => stopping, healthTimeoutMs: 50 })
  t.teardown(() => { m.close() })
  t.same(await Promise.all([m.health(), m.health(), m.health()]), [undefined, undefined, undefined])
  t.same(asked, [1, 2], 'three requests, one probe per worker')

  workers = [answering(1, {}, asked), answering(2, { problem: 'user store unavailable: ECONNREFUSED' }, asked)]
  t.equal(await m.health(), 'worker 2: user store unavailable: ECONNREFUSED')

  workers = [answering(1, { silent: true }, asked), answering(2, {}, asked)]
  const started = Date.now()
  t.equal(await m.health(), 'worker 1: no answer within 50 ms')
  t.ok(Date.now() - started < 10_000, 'bounded by the probe timeout, not waiting for the worker')

  asked.length = 0
  workers = [answering(1, {}, asked), { index: 2, ready: false }]
  t.equal(await m.health(), 'worker 2 is not ready (exited, restarting)')
  t.same(await m.metrics.text(), { unavailable: 'worker 2 is not ready (exited, restarting)' }, '/metrics: no partial sum')
  t.same(asked, [], 'nobody asked meanwhile')

  stopping = true
  t.equal(await m.health(), 'stopping')
})

t.test('/metrics: a burst of scrapes asks the workers once', async (t) => {
  const clusterMetrics = AggregatorRegistry.prototype.clusterMetrics
  let calls = 0
  AggregatorRegistry.prototype.clusterMetrics = async function (this: AggregatorRegistry) {
    calls++
    await new Promise((resolve) => setTimeout(resolve, 20))
    return 'merged 1\n'
  }
  t.teardown(() => { AggregatorRegistry.prototype.clusterMetrics = clusterMetrics })
  const workers: WorkerView[] = [answering(1, {}, []), answering(2, {}, [])]
  const m = createPrimaryMonitoring({ workers: () => workers, stopping: () => false })
  t.teardown(() => { m.close() })
  const texts = await Promise.all(Array.from({ length: 50 }, async () => await m.metrics.text()))
  t.ok(texts.every((x) => x === 'merged 1\n'), 'every request gets the merge')
  t.equal(calls, 1, 'fifty requests, one round of the workers')
  await m.metrics.text()
  t.equal(calls, 2, 'a later scrape asks again')
})
