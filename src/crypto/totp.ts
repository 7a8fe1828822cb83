import { generateSecret, generateSync, generateURI, verifySync } from 'otplib'

// RFC 6238 defaults, which every authenticator app and pyotp use: SHA-1, 6 digits, 30 s.
const PERIOD = 30

export interface TotpMatch {
  /** The RFC 6238 time step (counter) the code belongs to; the unit of replay protection. */
  step: number
  /** Steps away from now: 0 on time, ±n for a drifting clock. */
  delta: number
}

export function newSecret (): string {
  return generateSecret()
}

/** Base32 (RFC 4648) of at least 128 bits, as RFC 4226 §4 (R6) requires: 26 characters or more. */
export function isValidSecret (secret: string): boolean {
  return /^[A-Z2-7]{26,128}=*$/.test(secret)
}

/** Checks a 6-digit code against the secret allowing `window` steps of drift either way. */
export function verifyCode (secret: string, code: string, window: number, now = Date.now()): TotpMatch | undefined {
  if (!/^\d{6}$/.test(code)) return undefined
  try {
    const r = verifySync({ secret, token: code, epoch: Math.floor(now / 1000), epochTolerance: window * PERIOD })
    return r.valid && 'timeStep' in r ? { step: r.timeStep, delta: r.delta } : undefined
  } catch {
    return undefined // a malformed stored secret never verifies anything
  }
}

/** The RFC 6238 time step (T) at `now`. */
export function stepAt (now = Date.now()): number {
  return Math.floor(now / 1000 / PERIOD)
}

export function currentCode (secret: string, now = Date.now()): string {
  return generateSync({ secret, epoch: Math.floor(now / 1000) })
}

/** The code of a given time step. */
export function codeForStep (secret: string, step: number): string {
  return generateSync({ secret, epoch: step * PERIOD })
}

export function otpauthUri (user: string, secret: string): string {
  return generateURI({ issuer: 'mqtt-bastion', label: user, secret })
}
