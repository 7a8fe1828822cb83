import type { HookEvent } from '../auth/hooks.js'
import type { Logger } from '../log.js'

/** The limits that can refuse something; also the only values of the metrics label. */
export const LIMIT_NAMES = ['connections', 'handshake_timeout', 'connect_timeout', 'keepalive', 'packet_size', 'topic',
  'subscriptions', 'queue', 'publish_rate'] as const
export type LimitName = typeof LIMIT_NAMES[number]

export interface LimitReporterOptions {
  log: Logger
  onEvent?: (event: HookEvent) => void
  /** A key's next line waits this long after its last one; default 60 s. */
  windowMs?: number
  /** Keys remembered at once; past it the remaining keys share one. Default 10 000. */
  maxKeys?: number
  now?: () => number
}

export interface LimitReporter {
  /**
   * One refusal by `limit`: counted every time, logged as `limit.<name>` at most once per
   * window per `key` (an address or a client), carrying how many were left out since.
   */
  hit (limit: LimitName, key: string, level: 'info' | 'warn', fields: Record<string, unknown>, msg: string): void
}

interface Gate { until: number; suppressed: number }

/**
 * Under attack a limit fires per socket or per packet: the counter takes all of them, the log
 * one line per key and window, so log volume stays bounded by the number of attackers.
 */
export function createLimitReporter (opts: LimitReporterOptions): LimitReporter {
  const windowMs = opts.windowMs ?? 60_000
  const maxKeys = opts.maxKeys ?? 10_000
  const now = opts.now ?? Date.now
  const emit = opts.onEvent ?? (() => {})
  const gates = new Map<string, Gate>()

  function gateKey (limit: LimitName, key: string, t: number): string {
    const k = `${limit}\u0000${key}`
    if (gates.has(k) || gates.size < maxKeys) return k
    for (const [old, g] of gates) if (g.until <= t) gates.delete(old)
    // Spread over more addresses than we remember: they share one line per window.
    return gates.size < maxKeys ? k : `${limit}\u0000*`
  }

  return {
    hit (limit, key, level, fields, msg) {
      emit({ type: 'limit', limit })
      const t = now()
      const k = gateKey(limit, key, t)
      const gate = gates.get(k)
      if (gate !== undefined && t < gate.until) {
        gate.suppressed++
        return
      }
      const suppressed = gate?.suppressed ?? 0
      gates.set(k, { until: t + windowMs, suppressed: 0 })
      opts.log[level]({ event: `limit.${limit}`, ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, msg)
    }
  }
}
