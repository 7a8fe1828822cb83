// A Mosquitto password file (written by Debian's mosquitto_passwd, mode 0600) and acl_file in a
// throwaway folder, for the tests of the Mosquitto drop-in (`<name>-password` is each password).
import { execFileSync } from 'node:child_process'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { scratch } from './scratch.js'

export function mosquittoFiles (prefix: string, users: readonly string[], aclText: string): { dir: string; passwd: string; acl: string } {
  const dir = scratch(prefix)()
  const passwd = join(dir, 'passwd')
  for (const [i, user] of users.entries()) {
    execFileSync('mosquitto_passwd', [...(i === 0 ? ['-c'] : []), '-b', passwd, user, `${user}-password`])
  }
  chmodSync(passwd, 0o600)
  const acl = join(dir, 'acl')
  writeFileSync(acl, aclText)
  return { dir, passwd, acl }
}
