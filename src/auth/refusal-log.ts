import type { TLSSocket } from 'node:tls'
import type { Client } from 'aedes'
import type { Logger } from '../log.js'
import { createLogGate, type LogGate, type LogGateOptions } from '../log-gate.js'
import type { Action, Identity, LoginFailure } from '../types.js'
import type { HookEvent } from './hooks.js'
import { ipKey } from './lockout.js'

// Refused without looking at credentials, as fast as a client reconnects; their cause
// (auth.lockout, a full login queue) is logged on its own.
const QUIET_REASONS: ReadonlySet<LoginFailure> = new Set(['locked_out', 'server_busy'])

/**
 * login.failed lines of one reason an address writes per minute before they are gated. At least
 * the fail2ban jails' maxretry (scripts/fail2ban/jail.d): an address that goes on guessing
 * still gets banned, however fast it guesses.
 */
export const LOGIN_FAILURES_LOGGED = 20

// Keys one account (its client ids) or one address (the accounts it claims) holds in the gate;
// past it they share one line, so nobody fills the gate and pushes the others' lines out.
const KEYS_PER_GROUP = 16

export const accountGroup = (user: string): string => `u\u0000${user}`
export const addressGroup = (remote: string): string => `a\u0000${ipKey(remote)}`
const suppressedField = (open: { suppressed: number }): { suppressed?: number } => open.suppressed > 0 ? { suppressed: open.suppressed } : {}

/** Characters of a client id shown in lines about a CONNECT refused for its id (limits.maxClientIdLength). */
const ID_SHOWN = 64
/** A client id as logged where it may be any length up to 64 KiB: its start only. */
export const shownId = (id: string | null | undefined): string | null | undefined => typeof id === 'string' && id.length > ID_SHOWN ? `${id.slice(0, ID_SHOWN)}...` : id

export function remoteOf (client: Client): string {
  return (client.conn as Partial<TLSSocket>).remoteAddress ?? 'unknown'
}

export interface RefusalLog {
  /** A publish, subscription, delivery or will the policy refused: counted, logged once per client, action and minute. */
  denied (client: Client, identity: Identity | undefined, action: Action | 'will', topic: string, reason: string): void
  /** A refused CONNECT: counted, logged as fail2ban needs it, then once per address, reason, account and minute. */
  loginFailed (client: Client, reason: LoginFailure, user: string | undefined): void
  /** A debug line a client can cause at will (its errors, its own packet size): once per key and minute. */
  debugGated (event: string, group: string, key: string, fields: Record<string, unknown>, msg: string): void
}

/**
 * The hooks' refusal lines. Every line a client can make us write at will goes through these
 * gates: once per key and minute, with the count of those left out (`suppressed`); `emit` (the
 * metrics) counts every one, so the log grows with the number of attackers, not their speed.
 */
export function createRefusalLog (opts: { log: Logger; emit: (event: HookEvent) => void; logGate?: Pick<LogGateOptions, 'windowMs' | 'now'> }): RefusalLog {
  const { log, emit } = opts
  const lines: LogGate = createLogGate({ ...opts.logGate, maxKeysPerGroup: KEYS_PER_GROUP })
  const loginAllowance: LogGate = createLogGate({ ...opts.logGate, burst: LOGIN_FAILURES_LOGGED })

  function denied (client: Client, identity: Identity | undefined, action: Action | 'will', topic: string, reason: string): void {
    emit({ type: 'acl.denied', action })
    const remote = remoteOf(client)
    // A client repeats a refused SUBSCRIBE or PUBLISH as fast as it can send it: one line per
    // client and action, with its first topic.
    const group = identity === undefined ? addressGroup(remote) : accountGroup(identity.user)
    const open = lines.pass(`acl.denied\u0000${action}\u0000${group}\u0000${client.id}`, group)
    if (open === undefined) return
    log.warn({ event: 'acl.denied', user: identity?.user, clientId: client.id, remote, action, topic, reason, ...suppressedField(open) }, 'ACL denied')
  }

  function loginFailed (client: Client, reason: LoginFailure, user: string | undefined): void {
    emit({ type: 'login.failed', reason })
    const remote = remoteOf(client)
    const address = addressGroup(remote)
    // The first lines of each reason from an address pass as they are (fail2ban counts them);
    // past those, one line per address, reason and claimed account. The accounts are the
    // client's choice: one address holds at most KEYS_PER_GROUP of them, then they share one.
    const open = !QUIET_REASONS.has(reason) && loginAllowance.pass(`${reason}\u0000${address}`) !== undefined
      ? { suppressed: 0 }
      : lines.pass(`login.failed\u0000${reason}\u0000${address}\u0000${user ?? ''}`, address)
    if (open === undefined) return
    log.warn({ event: 'login.failed', reason, user, clientId: client.id, remote, ...suppressedField(open) }, 'login refused')
  }

  /** A debug line a client can cause at will (its errors, its own packet size): once per key and minute. */
  function debugGated (event: string, group: string, key: string, fields: Record<string, unknown>, msg: string): void {
    if (!log.isLevelEnabled('debug')) return
    const open = lines.pass(`${event}\u0000${group}\u0000${key}`, group)
    if (open !== undefined) log.debug({ event, ...fields, ...suppressedField(open) }, msg)
  }

  return { denied, loginFailed, debugGated }
}
