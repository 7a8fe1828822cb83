import type { LoginQueueConfig } from '../config/hardening.js'
import { BastionError } from '../errors.js'
import { passwordPoolSize } from '../crypto/password-pool.js'
import type { Authenticator, LoginRequest } from './authenticator.js'

export interface LoginQueueOptions extends LoginQueueConfig {
  /** auth.workers: the password pool's size, 0 meaning the pool's own default. */
  workers: number
  /**
   * Logins from known devices (see reputation.ts): they wait in a line of their own, with its
   * own `maxWaiting`, served before the others whenever a slot frees.
   */
  priority?: (req: LoginRequest) => boolean
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

interface Waiter { resolve: () => void; reject: (err: Error) => void; timer?: NodeJS.Timeout }

// A login told "busy" this long before its code expires still has time to retry with it.
const EXPIRY_MARGIN_MS = 1000

/**
 * A bounded queue in front of the password check (bcrypt; for authenticators without a cheap
 * first phase, the whole login). A storm of CONNECTs waits here in order instead of piling onto
 * the password pool, and past `maxWaiting`, or when its code would expire first, it is told
 * "server busy" (BASTION_ERR_BUSY: the hooks answer 0x89 / 3.1.1 code 3), so
 * memory and queueing delay stay bounded and the event loop keeps moving connected clients'
 * packets.
 */
export function createLoginQueue (opts: LoginQueueOptions): LoginQueue {
  // Two per worker keeps every worker busy while the next login does its store lookup.
  const concurrency = opts.concurrency > 0 ? opts.concurrency : 2 * passwordPoolSize(opts.workers)
  let active = 0
  // A Set keeps insertion order: the first waiter is the oldest.
  const waiting = new Set<Waiter>()
  const preferred = new Set<Waiter>()
  let closed = false

  async function acquire (deadline: number | undefined, first: boolean): Promise<void> {
    const line = first ? preferred : waiting
    if (closed) throw new BastionError('BASTION_ERR_BUSY', 'the broker is shutting down')
    if (active < concurrency) {
      active++
      return
    }
    if (line.size >= opts.maxWaiting) {
      throw new BastionError('BASTION_ERR_BUSY', `${concurrency} logins in progress and ${line.size} waiting (auth.loginQueue)`)
    }
    // A device whose code expires while it waits would be refused anyway, after the wait: told
    // "busy" in time, it retries at once with a fresh code.
    const patience = deadline === undefined ? Infinity : deadline - Date.now() - EXPIRY_MARGIN_MS
    if (patience <= 0) throw new BastionError('BASTION_ERR_BUSY', 'the login\'s code expires before a password check slot is free')
    await new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, reject }
      if (patience < Infinity) {
        w.timer = setTimeout(() => {
          line.delete(w)
          reject(new BastionError('BASTION_ERR_BUSY', 'the login\'s code expired while it waited for a password check slot'))
        }, patience)
      }
      line.add(w)
    })
  }

  function release (): void {
    const line = preferred.size > 0 ? preferred : waiting
    const next = line.values().next()
    if (next.done === true) {
      active--
      return
    }
    // The slot passes straight to the oldest waiter: `active` stays the same.
    line.delete(next.value)
    clearTimeout(next.value.timer)
    next.value.resolve()
  }

  function close (): void {
    closed = true
    for (const w of [...preferred, ...waiting]) {
      clearTimeout(w.timer)
      w.reject(new BastionError('BASTION_ERR_BUSY', 'the broker is shutting down'))
    }
    waiting.clear()
    preferred.clear()
  }

  return {
    concurrency,
    get active () { return active },
    get waiting () { return waiting.size + preferred.size },
    wrap (a) {
      const screen = a.screen?.bind(a)
      return {
        name: a.name,
        async login (req) {
          // Only what a cheap first phase leaves (a password check) takes a slot. Inline, not a
          // helper: each extra await lets a waiter woken by release() run its lockout re-check
          // before this attempt's failure is counted.
          const s = screen === undefined ? undefined : await screen(req)
          if (s !== undefined && 'result' in s) return s.result
          await acquire(s?.deadline, opts.priority?.(req) === true)
          try {
            return s === undefined ? await a.login(req) : await s.verify()
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
