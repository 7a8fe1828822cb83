// Runs bcrypt off the broker's event loop: one message in, one answer out.
import { parentPort } from 'node:worker_threads'
import bcrypt from 'bcryptjs'

export interface PasswordJob { id: number; op: 'verify' | 'hash'; password: string; hash?: string; cost?: number }
export interface PasswordAnswer { id: number; ok?: boolean; hash?: string; error?: string }

/** Sent once the module is loaded, so the pool knows this worker can take jobs. */
export const READY = { id: 0, ready: true }

parentPort?.on('message', (job: PasswordJob) => {
  let answer: PasswordAnswer
  try {
    answer = job.op === 'verify'
      ? { id: job.id, ok: bcrypt.compareSync(job.password, normalize(job.hash ?? '')) }
      : { id: job.id, hash: bcrypt.hashSync(job.password, job.cost ?? 12) }
  } catch (err) {
    answer = { id: job.id, error: (err as Error).message }
  }
  parentPort?.postMessage(answer)
})

// $2y$ (PHP) and $2b$ (OpenBSD, Python's bcrypt) hashes are the same algorithm as $2a$ for any
// password bcryptjs accepts; bcryptjs only knows $2a$/$2b$, so the prefix is aligned first.
function normalize (hash: string): string {
  return hash.startsWith('$2y$') ? '$2b$' + hash.slice(4) : hash
}

parentPort?.postMessage(READY)
