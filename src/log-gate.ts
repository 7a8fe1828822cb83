/**
 * Bounds how often one key (an address, a client) may write the same log line: under attack a
 * refusal fires per socket or per packet, and the log must stay readable and finite. Counters
 * take every refusal; the gate lets one line per key and window through, carrying how many were
 * left out since.
 */
export interface LogGate {
  /** undefined: stay quiet; otherwise log now, with `suppressed` lines left out before this one. */
  pass (key: string): { suppressed: number } | undefined
}

export interface LogGateOptions {
  /** A key's next line waits this long after its last one; default 60 s. */
  windowMs?: number
  /** Keys remembered at once; past it the remaining keys share one. Default 10 000. */
  maxKeys?: number
  now?: () => number
}

interface Gate { until: number; suppressed: number }

export function createLogGate (opts: LogGateOptions = {}): LogGate {
  const windowMs = opts.windowMs ?? 60_000
  const maxKeys = opts.maxKeys ?? 10_000
  const now = opts.now ?? Date.now
  const gates = new Map<string, Gate>()

  function gateKey (key: string, t: number): string {
    if (gates.has(key) || gates.size < maxKeys) return key
    for (const [old, g] of gates) if (g.until <= t) gates.delete(old)
    // Spread over more keys than we remember: they share one line per window.
    return gates.size < maxKeys ? key : '\u0000*'
  }

  return {
    pass (key) {
      const t = now()
      const k = gateKey(key, t)
      const gate = gates.get(k)
      if (gate !== undefined && t < gate.until) {
        gate.suppressed++
        return undefined
      }
      gates.set(k, { until: t + windowMs, suppressed: 0 })
      return { suppressed: gate?.suppressed ?? 0 }
    }
  }
}
