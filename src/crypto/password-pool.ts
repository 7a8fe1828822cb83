import { Worker } from 'node:worker_threads'
import { availableParallelism } from 'node:os'
import { isMosquittoHash, verifyMosquittoHash } from './mosquitto-hash.js'
import type { PasswordAnswer, PasswordJob } from './password-worker.js'

export interface PasswordPool {
  /**
   * True when `password` matches `hash`: bcrypt (`$2a$`/`$2b$`/`$2y$`, in a worker) or a
   * Mosquitto password_file hash (`$6$`/`$7$`); false for a mismatch or a malformed hash.
   */
  verify (password: string, hash: string): Promise<boolean>
  hash (password: string, cost?: number): Promise<string>
  /** Resolves once every worker has loaded; rejects if one cannot start (e.g. missing file). */
  ready (): Promise<void>
  close (): Promise<void>
}

interface Pending { resolve: (a: PasswordAnswer) => void; reject: (e: Error) => void }
interface Slot { worker: Worker; pending: Map<number, Pending>; ready: Promise<void> }

// The worker sits beside this module with the same extension (.js when built, .ts under tsx).
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './password-worker.ts' : './password-worker.js', import.meta.url)

/** The workers a pool of `size` runs: `size`, or for 0 one per core, at most 4. */
export function passwordPoolSize (size: number): number {
  return size > 0 ? size : Math.min(4, Math.max(1, availableParallelism()))
}

/**
 * bcrypt is deliberately slow (~300 ms at cost 12): verifying on the main thread would stall
 * every connected client. Jobs go to the least busy worker; a worker that dies fails only its
 * own jobs and is replaced.
 */
export function createPasswordPool (size = 0): PasswordPool {
  const count = passwordPoolSize(size)
  const slots: Slot[] = []
  let nextId = 1
  let closed = false

  function spawn (): Slot {
    const worker = new Worker(WORKER_URL)
    const ready = new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve())
      worker.once('error', reject)
    })
    const slot: Slot = { worker, pending: new Map(), ready }
    // Keep the process alive while the worker loads; after that, only while jobs are in flight.
    ready.then(() => { if (slot.pending.size === 0) worker.unref() }, () => {})
    slot.worker.on('message', (a: PasswordAnswer) => {
      if (a.id === 0) return // the READY message
      const p = slot.pending.get(a.id)
      slot.pending.delete(a.id)
      if (slot.pending.size === 0) slot.worker.unref()
      p?.resolve(a)
    })
    const fail = (err: Error): void => {
      for (const p of slot.pending.values()) p.reject(err)
      slot.pending.clear()
      const i = slots.indexOf(slot)
      if (i >= 0 && !closed) slots[i] = spawn()
    }
    slot.worker.on('error', fail)
    slot.worker.on('exit', (code) => { if (!closed) fail(new Error(`password worker exited with code ${code}`)) })
    return slot
  }
  for (let i = 0; i < count; i++) slots.push(spawn())

  function run (job: Omit<PasswordJob, 'id'>): Promise<PasswordAnswer> {
    if (closed) return Promise.reject(new Error('password pool is closed'))
    const slot = slots.reduce((a, b) => (b.pending.size < a.pending.size ? b : a))
    const id = nextId++
    return new Promise((resolve, reject) => {
      slot.pending.set(id, { resolve, reject })
      // Keep the process alive only while work is in flight.
      slot.worker.ref()
      slot.worker.postMessage({ ...job, id })
    })
  }

  return {
    async verify (password, hash) {
      // PBKDF2 runs on libuv's thread pool and one SHA-512 is cheap: neither needs a worker.
      if (isMosquittoHash(hash)) return await verifyMosquittoHash(password, hash)
      const a = await run({ op: 'verify', password, hash })
      return a.ok === true
    },
    async hash (password, cost = 12) {
      const a = await run({ op: 'hash', password, cost })
      if (a.hash === undefined) throw new Error(a.error ?? 'bcrypt hash failed')
      return a.hash
    },
    async ready () {
      await Promise.all(slots.map(async (s) => await s.ready))
    },
    async close () {
      closed = true
      await Promise.all(slots.map(async (s) => await s.worker.terminate()))
    }
  }
}
