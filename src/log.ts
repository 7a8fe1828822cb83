import { pino, type Logger, type LevelWithSilent, type DestinationStream } from 'pino'

export type { Logger }

/**
 * Paths pino blanks out wherever they appear one level deep. Modules never log a raw MQTT
 * username either: it carries the one-time code (`user|123456`), so they log `user` only.
 */
export const REDACT_PATHS = [
  'password', '*.password',
  'otp', '*.otp',
  'code', '*.code',
  'secret', '*.secret',
  'totpSecret', '*.totpSecret',
  'passwordHash', '*.passwordHash',
  'username', '*.username',
  'url', '*.url'
]

export interface LogOptions {
  level: LevelWithSilent
  destination?: DestinationStream
}

export function createLogger (opts: LogOptions): Logger {
  return pino({
    level: opts.level,
    base: { name: 'mqtt-bastion' },
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime
  }, opts.destination ?? pino.destination({ dest: 1, sync: false }))
}
