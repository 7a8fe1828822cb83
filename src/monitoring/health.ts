import type { UserStore } from '../stores/store.js'

/** Resolves undefined when healthy, else a one-line reason for the 503. */
export type HealthCheck = () => Promise<string | undefined>

export interface HealthDeps {
  /** Why the MQTT listeners are not all accepting, or undefined when they are. */
  listeners: () => string | undefined
  /** A local user store, asked with ping(). */
  store?: UserStore
  /** A remote backend's outage as last seen by logins and ACL checks (it has no ping). */
  backendOutage?: () => string | undefined
  /** How long the store may take to answer; past it the broker is unhealthy. */
  timeoutMs?: number
}

const DEFAULT_TIMEOUT_MS = 1000

/**
 * /healthz: up when every listener accepts and the user store answers. Probes in flight are
 * shared, so a burst of health requests costs one store round trip.
 */
export function createHealthCheck (deps: HealthDeps): HealthCheck {
  const timeoutMs = deps.timeoutMs ?? DEFAULT_TIMEOUT_MS
  let inFlight: Promise<string | undefined> | undefined

  async function pingStore (store: UserStore): Promise<string | undefined> {
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([
        store.ping(),
        new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs) })
      ])
      return undefined
    } catch (err) {
      return `user store unavailable: ${oneLine((err as Error).message)}`
    } finally {
      clearTimeout(timer)
    }
  }

  return async () => {
    const listeners = deps.listeners()
    if (listeners !== undefined) return listeners
    const outage = deps.backendOutage?.()
    if (outage !== undefined) return `auth backend unavailable: ${oneLine(outage)}`
    if (deps.store === undefined) return undefined
    inFlight ??= pingStore(deps.store).finally(() => { inFlight = undefined })
    return await inFlight
  }
}

function oneLine (s: string): string {
  return s.replace(/\s+/g, ' ').slice(0, 300)
}
