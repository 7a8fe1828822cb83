/** The rules for a new base password, shared by `user add`, `user passwd` and `user import`. */

export const MIN_PASSWORD = 8
/** bcrypt reads only the first 72 bytes: two passwords sharing those would log in as each other. */
export const MAX_PASSWORD_BYTES = 72
export const BCRYPT_COST = 12

/** What is wrong with `password` as a new base password, or undefined. Never quotes it. */
export function passwordProblem (password: string): string | undefined {
  if (password.length < MIN_PASSWORD) return `password too short: at least ${MIN_PASSWORD} characters`
  const bytes = Buffer.byteLength(password, 'utf8')
  if (bytes > MAX_PASSWORD_BYTES) {
    return `password too long: bcrypt uses only the first ${MAX_PASSWORD_BYTES} bytes (this one has ${bytes})`
  }
  return undefined
}
