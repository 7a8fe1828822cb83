import type { Socket } from 'node:net'
import type { HookEvent } from '../auth/hooks.js'
import type { Lockout } from '../auth/lockout.js'
import type { LimitsConfig } from '../config/hardening.js'
import type { ListenerLimits } from '../listeners/listener.js'
import type { Logger } from '../log.js'
import { createLogGate } from '../log-gate.js'
import { createConnectionLimiter } from './connections.js'
import type { LimitReporter } from './report.js'

export interface AdmissionOptions {
  limits: LimitsConfig
  report: LimitReporter
  lockout: Pick<Lockout, 'addressLocked'>
  log: Logger
  onEvent?: (event: HookEvent) => void
}

/**
 * What every listener applies to a socket before TLS or MQTT: a locked-out address is closed
 * first (the cheapest refusal there is), then the connection limits, shared by all listeners
 * so the total is across them.
 */
export function createAdmission (opts: AdmissionOptions): ListenerLimits {
  const { limits, report } = opts
  const connections = createConnectionLimiter(limits, report)
  const lockedGate = createLogGate()
  const lockedAddress = (socket: Socket): boolean => {
    const remote = socket.remoteAddress
    if (remote === undefined || !opts.lockout.addressLocked(remote)) return false
    opts.onEvent?.({ type: 'login.failed', reason: 'locked_out' })
    const open = lockedGate.pass(remote)
    if (open !== undefined) {
      opts.log.info({ event: 'connection.locked_out', remote, ...(open.suppressed > 0 ? { suppressed: open.suppressed } : {}) },
        'connection closed before TLS: this address is locked out after failed logins')
    }
    return true
  }
  return {
    admit: (socket) => !lockedAddress(socket) && connections.admit(socket),
    // A PROXY listener's socket is counted while its header is read, then admitted by it.
    hold: (socket) => connections.hold(socket),
    tlsHandshakeTimeout: limits.tlsHandshakeTimeout * 1000,
    handshakeTimedOut: (remote) => { report.hit('handshake_timeout', remote ?? 'unknown', 'info', { remote }, 'connection closed: TLS handshake took too long') },
    maxPacketSize: limits.maxPacketSize
  }
}
