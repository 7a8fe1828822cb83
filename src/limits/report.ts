import type { HookEvent } from '../auth/hooks.js'
import type { Logger } from '../log.js'
import { createLogGate } from '../log-gate.js'

/** The limits that can refuse something; also the only values of the metrics label. */
export const LIMIT_NAMES = ['connections', 'handshake_timeout', 'connect_timeout', 'keepalive', 'client_id', 'packet_size', 'topic',
  'subscriptions', 'queue', 'publish_rate', 'subscribe_rate', 'receive_maximum'] as const
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

/**
 * Under attack a limit fires per socket or per packet: the counter takes all of them, the log
 * one line per key and window, so log volume stays bounded by the number of attackers.
 */
export function createLimitReporter (opts: LimitReporterOptions): LimitReporter {
  const emit = opts.onEvent ?? (() => {})
  const gate = createLogGate({
    ...(opts.windowMs === undefined ? {} : { windowMs: opts.windowMs }),
    ...(opts.maxKeys === undefined ? {} : { maxKeys: opts.maxKeys }),
    ...(opts.now === undefined ? {} : { now: opts.now })
  })

  return {
    hit (limit, key, level, fields, msg) {
      emit({ type: 'limit', limit })
      const open = gate.pass(`${limit}\u0000${key}`)
      if (open === undefined) return
      const { suppressed } = open
      opts.log[level]({ event: `limit.${limit}`, ...fields, ...(suppressed > 0 ? { suppressed } : {}) }, msg)
    }
  }
}
