import { availableParallelism } from 'node:os'
import type { LoginQueueConfig } from '../config/hardening.js'
import { BastionError } from '../errors.js'
import type { Authenticator } from './authenticator.js'

export interface LoginQueueOptions extends LoginQueueConfig {
  /** auth.workers: the password pool's size, 0 meaning the pool's own default. */
  workers: number
}

export interface LoginQueue {
  /** Logins allowed in the inner authenticator at once. */
  readonly concurrency: number
  /** Logins in the inner authenticator now, and waiting for a slot. */
  readonly active: number
  readonly waiting: number
  wrap (a: Authenticator): Authenticator
  /** Refuses every waiting login (server busy) and any later one. */
  close (): void
}

/** The password pool's default size (createPasswordPool): one worker per core, at most 4. */
function poolSize (workers: number): number {
  return workers > 0 ? workers : Math.min(4, Math.max(1, availableParallelism()))
}

/**
 * A bounded queue in front of the login check (store lookup + bcrypt). A storm of CONNECTs
 * waits here in order instead of piling onto the password pool, and past `maxWaiting` it is
 * told "server busy" at once (BASTION_ERR_BUSY: the hooks answer 0x89 / 3.1.1 code 3), so
 * memory and queueing delay stay bounded and the event loop keeps moving connected clients'
 * packets.
 */
export function createLoginQueue (opts: LoginQueueOptions): LoginQueue {
  // Two per worker keeps every worker busy while the next login does its store lookup.
  const concurrency = opts.concurrency > 0 ? opts.concurrency : 2 * poolSize(opts.workers)
  let active = 0
  // A Set keeps insertion order: the first waiter is the oldest.
  const waiting = new Set<{ resolve: () => void; reject: (err: Error) => void }>()
  let closed = false

  async function acquire (): Promise<void> {
    if (closed) throw new BastionError('BASTION_ERR_BUSY', 'the broker is shutting down')
    if (active < concurrency) {
      active++
      return
    }
    if (waiting.size >= opts.maxWaiting) {
      throw new BastionError('BASTION_ERR_BUSY', `${concurrency} logins in progress and ${waiting.size} waiting (auth.loginQueue)`)
    }
    await new Promise<void>((resolve, reject) => { waiting.add({ resolve, reject }) })
  }

  function release (): void {
    const next = waiting.values().next()
    if (next.done === true) {
      active--
      return
    }
    // The slot passes straight to the oldest waiter: `active` stays the same.
    waiting.delete(next.value)
    next.value.resolve()
  }

  function close (): void {
    closed = true
    for (const w of waiting) w.reject(new BastionError('BASTION_ERR_BUSY', 'the broker is shutting down'))
    waiting.clear()
  }

  return {
    concurrency,
    get active () { return active },
    get waiting () { return waiting.size },
    wrap (a) {
      return {
        name: a.name,
        async login (req) {
          await acquire()
          try {
            return await a.login(req)
          } finally {
            release()
          }
        },
        async close () {
          close()
          await a.close?.()
        }
      }
    },
    close
  }
}
