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
  /**
   * Counts a socket in the total only, while its real address is not known yet (a PROXY
   * header is awaited); its admit() then counts the address without counting it twice.
   */
  hold (socket: Socket): boolean
  /** Sockets open now, in total and from `address`. */
  open (address?: string): number
}

/** One limiter shared by all listeners, so the total is across them. */
export function createConnectionLimiter (limits: ConnectionLimits, report: LimitReporter): ConnectionLimiter {
  let total = 0
  const perIp = new Map<string, number>()
  // Each counted socket until it closes: the address it was admitted under, or `true` while it
  // is held (counted in the total only, its PROXY header not read yet).
  const counted = new WeakMap<Socket, string | true>()

  function refuse (scope: 'total' | 'ip', remote: string, limit: number): false {
    report.hit('connections', remote, 'warn', { scope, remote, limit }, scope === 'total' ? 'connection refused: too many connections' : 'connection refused: too many connections from this address')
    return false
  }

  /**
   * Gives a closed socket's slots back. One function for every socket (its `this`), so a
   * connection costs a listener slot, not a closure and a once() wrapper per count. The
   * accepted socket emits 'close' once, also when TLS took over its handle; the entry is
   * dropped first, so nothing is given back twice.
   */
  function onClose (this: Socket): void {
    const remote = counted.get(this)
    if (remote === undefined) return
    counted.delete(this)
    total--
    if (remote === true) return
    const left = (perIp.get(remote) ?? 1) - 1
    if (left <= 0) perIp.delete(remote)
    else perIp.set(remote, left)
  }

  return {
    hold (socket) {
      const remote = socket.remoteAddress
      if (remote === undefined || socket.destroyed) return false
      if (total >= limits.maxConnections) return refuse('total', remote, limits.maxConnections)
      total++
      counted.set(socket, true)
      socket.on('close', onClose)
      return true
    },
    admit (socket) {
      const remote = socket.remoteAddress
      // Reset before we saw it: nothing to count and nobody to answer.
      if (remote === undefined || socket.destroyed) return false
      const held = counted.get(socket) === true
      if (!held && total >= limits.maxConnections) return refuse('total', remote, limits.maxConnections)
      const fromIp = perIp.get(remote) ?? 0
      if (limits.maxConnectionsPerIp > 0 && fromIp >= limits.maxConnectionsPerIp) return refuse('ip', remote, limits.maxConnectionsPerIp)
      if (!held) {
        total++
        socket.on('close', onClose)
      }
      perIp.set(remote, fromIp + 1)
      counted.set(socket, remote)
      return true
    },
    open (address) {
      return address === undefined ? total : perIp.get(address) ?? 0
    }
  }
}
