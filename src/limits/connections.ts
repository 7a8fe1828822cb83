import type { Socket } from 'node:net'
import type { LimitReporter } from './report.js'

export interface ConnectionLimits {
  /** Open sockets across every listener. */
  maxConnections: number
  /** Open sockets from one address; 0 = no per-address limit. */
  maxConnectionsPerIp: number
}

export interface ConnectionLimiter {
  /**
   * Counts a socket just accepted, before any TLS or MQTT work; false when it is over a limit
   * (the caller destroys it). An admitted socket is released once, when it closes.
   */
  admit (socket: Socket): boolean
  /** Sockets open now, in total and from `address`. */
  open (address?: string): number
}

/** One limiter shared by all listeners, so the total is across them. */
export function createConnectionLimiter (limits: ConnectionLimits, report: LimitReporter): ConnectionLimiter {
  let total = 0
  const perIp = new Map<string, number>()

  function refuse (scope: 'total' | 'ip', remote: string, limit: number): false {
    report.hit('connections', remote, 'warn', { scope, remote, limit }, scope === 'total' ? 'connection refused: too many connections' : 'connection refused: too many connections from this address')
    return false
  }

  return {
    admit (socket) {
      const remote = socket.remoteAddress
      // Reset before we saw it: nothing to count and nobody to answer.
      if (remote === undefined || socket.destroyed) return false
      if (total >= limits.maxConnections) return refuse('total', remote, limits.maxConnections)
      const fromIp = perIp.get(remote) ?? 0
      if (limits.maxConnectionsPerIp > 0 && fromIp >= limits.maxConnectionsPerIp) return refuse('ip', remote, limits.maxConnectionsPerIp)
      total++
      perIp.set(remote, fromIp + 1)
      // The accepted socket emits 'close' once, also when TLS took over its handle.
      socket.once('close', () => {
        total--
        const left = (perIp.get(remote) ?? 1) - 1
        if (left <= 0) perIp.delete(remote)
        else perIp.set(remote, left)
      })
      return true
    },
    open (address) {
      return address === undefined ? total : perIp.get(address) ?? 0
    }
  }
}
