/**
 * Bounds how often one key (an address, a client) may write the same log line: under attack a
 * refusal fires per socket or per packet, and the log must stay readable and finite. Counters
 * take every refusal; the gate lets `burst` lines per key and window through (one by default),
 * the first of a window carrying how many were left out since the last.
 */
export interface LogGate {
  /**
   * undefined: stay quiet; otherwise log now, with `suppressed` lines left out before this one.
   * `group` is who holds the key (an account, an address): see `maxKeysPerGroup`.
   */
  pass (key: string, group?: string): { suppressed: number } | undefined
}

export interface LogGateOptions {
  /** A key's window: its next line after `burst` waits until this long after the window began; default 60 s. */
  windowMs?: number
  /** Keys remembered at once; past it the remaining keys share one. Default 10 000. */
  maxKeys?: number
  /** Lines a key writes per window before it is held back; default 1. */
  burst?: number
  /**
   * Keys one group holds at once; past it the group's further keys share one line. Keeps one
   * client or address, which picks its own keys (client ids, claimed accounts), from filling the
   * gate and pushing everyone else into the shared key. Default: no cap.
   */
  maxKeysPerGroup?: number
  now?: () => number
}

interface Gate { until: number; passed: number; suppressed: number; group: string | undefined }

// Callers' keys start with an event or action name: these cannot collide with them.
const SHARED = '\u0000*'
const groupShared = (group: string): string => `\u0001${group}`

export function createLogGate (opts: LogGateOptions = {}): LogGate {
  const windowMs = opts.windowMs ?? 60_000
  const maxKeys = opts.maxKeys ?? 10_000
  const burst = opts.burst ?? 1
  const perGroup = opts.maxKeysPerGroup ?? Infinity
  const now = opts.now ?? Date.now
  // In the order windows began (a key whose window restarts is moved to the end), so the
  // expired keys are always the first ones: forgetting them never scans the live ones.
  const gates = new Map<string, Gate>()
  const groups = new Map<string, Set<string>>()

  function forget (key: string, gate: Gate): void {
    gates.delete(key)
    if (gate.group === undefined) return
    const keys = groups.get(gate.group)
    keys?.delete(key)
    if (keys?.size === 0) groups.delete(gate.group)
  }

  function expire (t: number): void {
    for (const [key, gate] of gates) {
      if (gate.until > t) break
      forget(key, gate)
    }
  }

  /** The key a line is counted under, and the group it is remembered in. */
  function slot (key: string, group: string | undefined, t: number): [string, string | undefined] {
    if (gates.has(key)) return [key, group]
    if (group !== undefined && (groups.get(group)?.size ?? 0) >= perGroup) {
      expire(t)
      if ((groups.get(group)?.size ?? 0) >= perGroup) return slot(groupShared(group), undefined, t)
    }
    if (gates.size < maxKeys) return [key, group]
    expire(t)
    // Spread over more keys than we remember: they share one line per window.
    return gates.size < maxKeys ? [key, group] : [SHARED, undefined]
  }

  return {
    pass (key, group) {
      const t = now()
      const [k, g] = slot(key, group, t)
      const gate = gates.get(k)
      if (gate !== undefined && t < gate.until) {
        if (gate.passed < burst) {
          gate.passed++
          return { suppressed: 0 }
        }
        gate.suppressed++
        return undefined
      }
      if (gate !== undefined) forget(k, gate)
      gates.set(k, { until: t + windowMs, passed: 1, suppressed: 0, group: g })
      if (g !== undefined) {
        let keys = groups.get(g)
        if (keys === undefined) groups.set(g, keys = new Set())
        keys.add(k)
      }
      return { suppressed: gate?.suppressed ?? 0 }
    }
  }
}
