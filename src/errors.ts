/**
 * Every error this project raises on purpose has a stable code here.
 * Codes are never reused or renamed: scripts and docs match on them.
 */
export const ErrorCodes = {
  BASTION_ERR_CONFIG: 'invalid configuration',
  BASTION_ERR_FILE_PERMISSIONS: 'a secret file is readable by group or others',
  BASTION_ERR_USER_STORE: 'the user store could not be read or written',
  BASTION_ERR_USER_EXISTS: 'the user already exists',
  BASTION_ERR_USER_UNKNOWN: 'no such user',
  BASTION_ERR_INVALID_USERNAME: 'invalid user name',
  BASTION_ERR_INVALID_INPUT: 'invalid input',
  BASTION_ERR_CERTS: 'certificate files could not be created or read',
  BASTION_ERR_BACKEND_UNAVAILABLE: 'an authentication backend could not answer',
  BASTION_ERR_LISTEN: 'a listener could not start',
  BASTION_ERR_BUSY: 'too many logins are waiting; the server is busy',
  BASTION_ERR_CLUSTER: 'the cluster\'s Redis could not be reached or refused the broker'
} as const

export type ErrorCode = keyof typeof ErrorCodes

export class BastionError extends Error {
  readonly code: ErrorCode
  constructor (code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'BastionError'
    this.code = code
  }
}

export function isBastionError (err: unknown): err is BastionError {
  return err instanceof BastionError
}
