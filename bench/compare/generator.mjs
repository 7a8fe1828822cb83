// The load generator's main-thread side: starts N worker threads (gen-worker.mjs), splits the
// clients between them and merges their answers. Its CPU is this whole process's
// (process.cpuUsage counts every thread: workers and this orchestrating main thread).
import { Worker } from 'node:worker_threads'

export class Generator {
  constructor ({ workers, host, port, servername, ca }) {
    this.workers = Array.from({ length: workers }, () => new Worker(new URL('./gen-worker.mjs', import.meta.url), { workerData: { host, port, servername, ca } }))
    this.pending = new Map()
    this.nextId = 0
    for (const w of this.workers) {
      w.on('message', ({ id, result, error }) => {
        const p = this.pending.get(id)
        this.pending.delete(id)
        error === undefined ? p.resolve(result) : p.reject(new Error(`generator worker: ${error}`))
      })
      w.on('error', (err) => { for (const p of this.pending.values()) p.reject(err); this.pending.clear() })
    }
  }

  call (w, cmd, args) {
    return new Promise((resolve, reject) => {
      const id = this.nextId++
      this.pending.set(id, { resolve, reject })
      this.workers[w].postMessage({ id, cmd, args })
    })
  }

  /** Sends `cmd` to every worker with its own round-robin share of `items` (under `key`). */
  async spread (cmd, items, key, extra = {}) {
    const shares = this.workers.map(() => [])
    items.forEach((item, i) => shares[i % shares.length].push(item))
    const results = await Promise.all(shares.map((share, w) => this.call(w, cmd, { ...extra, [key]: share })))
    return merge(results)
  }

  /** Sends the same command to every worker. */
  async all (cmd, args) {
    return merge(await Promise.all(this.workers.map((_, w) => this.call(w, cmd, args))))
  }

  async close () {
    await Promise.all(this.workers.map((w) => w.terminate()))
  }
}

/** Adds numbers, concatenates arrays, merges failure-reason counts; keeps the first of anything else. */
function merge (results) {
  const out = {}
  for (const r of results) {
    for (const [k, v] of Object.entries(r)) {
      if (v === undefined) continue
      if (typeof v === 'number') out[k] = (out[k] ?? 0) + v
      else if (Array.isArray(v)) out[k] = (out[k] ?? []).concat(v)
      else if (k === 'failed') { out[k] ??= {}; for (const [why, n] of Object.entries(v)) out[k][why] = (out[k][why] ?? 0) + n }
      else out[k] ??= v
    }
  }
  return out
}
