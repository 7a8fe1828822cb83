import bcrypt from 'bcryptjs'
import QRCode from 'qrcode'
import { loadConfig } from '../config/load.js'
import { codeForStep, isValidSecret, newSecret, otpauthUri, stepAt } from '../crypto/totp.js'
import { BastionError } from '../errors.js'
import { createStore } from '../stores/create.js'
import type { UserRecord, UserStore } from '../stores/store.js'
import type { BastionConfig } from '../config/schema.js'
import { USERNAME_PATTERN } from '../types.js'
import { expectPositionals, parse, stringFlag, UsageError } from './args.js'
import { BCRYPT_COST, MAX_PASSWORD_BYTES, MIN_PASSWORD, passwordProblem } from './password-rules.js'
import { readPassword } from './prompt.js'
import { exportUsers, importUsers } from './user-bulk.js'
import { cliStoreLogger } from './store-log.js'

export const USER_HELP = `Usage:
  mqtt-bastion user add NAME [--password P] [--totp-secret BASE32] [--json | --qr] [--config FILE]
  mqtt-bastion user list [--json] [--config FILE]
  mqtt-bastion user disable|enable|remove NAME [--config FILE]
  mqtt-bastion user passwd NAME [--password P] [--config FILE]
  mqtt-bastion user rotate-totp NAME [--totp-secret BASE32] [--json | --qr] [--config FILE]
  mqtt-bastion user otp NAME [--config FILE]
  mqtt-bastion user import FILE [--config FILE]
  mqtt-bastion user export [--config FILE]

Manages the user store named by the config (default: data/users.db).
A device logs in with MQTT username "NAME|CODE" (CODE: the current 6-digit TOTP code)
and MQTT password = the base password: ${MIN_PASSWORD} characters to ${MAX_PASSWORD_BYTES} bytes of UTF-8
(bcrypt ignores every byte after the ${MAX_PASSWORD_BYTES}th, so a longer one is refused).

  add           Creates NAME (letters, digits, _ . - ; at most 64). Without --password it
                asks for one (hidden), or reads the first line of piped standard input.
                Prints the TOTP secret, its otpauth:// URI and, on a terminal (or with
                --qr), a QR code for an authenticator app (--json: one JSON object instead).
  list          Lists users and whether they are enabled.
  disable       Refuses NAME's next logins; enable undoes it. remove deletes NAME.
  passwd        Sets a new base password.
  rotate-totp   Issues a new TOTP secret (or sets --totp-secret).
  otp           Prints a code the broker accepts now, for testing with mosquitto_pub.
                A code is accepted once per user (replay protection): when the current
                step's code was used, it prints the next step's (inside the window), and
                fails saying how long to wait when that one was used too.
  import        Adds the users in FILE (- : standard input), one JSON object per line:
                  {"username":"alice","password":"...","totpSecret":"BASE32..."}
                with passwordHash (bcrypt) instead of password, and optionally
                "enabled":false and "createdAt":"2026-12-01T00:00:00Z". All or nothing:
                one bad line, or one user who already exists, imports nobody.
                Plain passwords are hashed here (bcrypt cost ${BCRYPT_COST}, ~0.3 s each).
                See docs/provisioning.md.
  export        Writes every user as one JSON line (the form import reads) to stdout.
                The output holds password hashes and TOTP secrets: keep it like a
                private key, e.g.  umask 077; mqtt-bastion user export > users.jsonl
  In a cluster (the config has cluster:), disable, remove, passwd and rotate-totp also tell
  every running node through Redis to re-check NAME's live sessions at once.
  --config FILE Config file (default: env BASTION_CONFIG, else built-in defaults).
`

function openStore (configFile: string | undefined): { store: UserStore; config: BastionConfig } {
  const { config } = loadConfig({ ...(configFile === undefined ? {} : { file: configFile }), env: process.env })
  // A failure reaches the user as one line on stderr; a users.json migration is told there too.
  return { store: createStore(config, cliStoreLogger()), config }
}

/** The earliest step inside the accepted window that replay protection has not used up. */
function usableCode (u: UserRecord, config: BastionConfig): string {
  if (u.totpSecret === undefined || !config.auth.totp.required) {
    throw new BastionError('BASTION_ERR_INVALID_INPUT', `${u.username} logs in without a TOTP code (auth.totp.required is off or the user has no secret)`)
  }
  const now = stepAt()
  const window = config.auth.totp.window
  for (let step = now; step <= now + window; step++) {
    if (!config.auth.totp.replayProtection || step > (u.lastStep ?? -1)) return codeForStep(u.totpSecret, step)
  }
  const wait = ((u.lastStep ?? now) - window + 1) * 30 - Math.floor(Date.now() / 1000)
  throw new BastionError('BASTION_ERR_INVALID_INPUT', `every code the broker accepts now for ${u.username} was used already; try again in ${Math.max(1, wait)} s`)
}

function checkName (name: string): string {
  if (!USERNAME_PATTERN.test(name)) {
    throw new BastionError('BASTION_ERR_INVALID_USERNAME', `invalid user name "${name}": use 1-64 letters, digits, _ . -`)
  }
  return name
}

async function passwordFrom (flag: string | undefined): Promise<string> {
  const password = flag ?? await readPassword('Password: ')
  // Nothing on a standard input that is not a terminal (cron, a script, </dev/null): say what
  // was expected rather than "too short".
  if (flag === undefined && password === '' && process.stdin.isTTY !== true) {
    throw new BastionError('BASTION_ERR_INVALID_INPUT', 'no password: give --password P, or pipe it on standard input (printf \'%s\\n\' "$PASSWORD" | mqtt-bastion user ...)')
  }
  const problem = passwordProblem(password)
  if (problem !== undefined) throw new BastionError('BASTION_ERR_INVALID_INPUT', problem)
  return password
}

function secretFrom (flag: string | undefined): string {
  if (flag === undefined) return newSecret()
  const secret = flag.replace(/\s+/g, '').toUpperCase()
  if (!isValidSecret(secret)) {
    throw new BastionError('BASTION_ERR_INVALID_INPUT', '--totp-secret must be base32 (A-Z, 2-7) of at least 26 characters (128 bits)')
  }
  return secret
}

async function printSecret (out: (s: string) => void, user: string, secret: string, json: boolean, drawQr: boolean, verb: string): Promise<void> {
  const uri = otpauthUri(user, secret)
  if (json) {
    out(JSON.stringify({ user, totpSecret: secret, otpauthUri: uri }) + '\n')
    return
  }
  // Drawn with colour escapes and block characters: only for a terminal (or when asked), never
  // into a log file or a pipe.
  const qr = drawQr ? `${await QRCode.toString(uri, { type: 'terminal', small: true })}\n` : '(QR code: run this on a terminal, or add --qr)\n'
  out(`${verb} ${user}\nTOTP secret: ${secret}\notpauth URI: ${uri}\n${qr}`)
}

export async function userCommand (argv: string[], out: (s: string) => void): Promise<void> {
  const [sub, ...rest] = argv
  if (sub === undefined || sub === '--help' || sub === '-h') { out(USER_HELP); return }
  const { values, positionals } = parse(rest, {
    config: { type: 'string' }, password: { type: 'string' }, 'totp-secret': { type: 'string' }, json: { type: 'boolean' }, qr: { type: 'boolean' }
  })
  if (values.help === true) { out(USER_HELP); return }
  const json = values.json === true
  if (json && values.qr === true) throw new UsageError('--json and --qr do not go together')
  const qr = values.qr === true || process.stdout.isTTY === true
  const allowed: Record<string, string[]> = {
    add: ['config', 'password', 'totp-secret', 'json', 'qr'],
    list: ['config', 'json'],
    disable: ['config'],
    enable: ['config'],
    remove: ['config'],
    passwd: ['config', 'password'],
    'rotate-totp': ['config', 'totp-secret', 'json', 'qr'],
    otp: ['config'],
    import: ['config'],
    export: ['config']
  }
  const flags = allowed[sub]
  if (flags === undefined) throw new UsageError(`unknown user command: ${sub} (see mqtt-bastion user --help)`)
  for (const k of Object.keys(values)) {
    if (values[k] !== undefined && !flags.includes(k)) throw new UsageError(`user ${sub} does not take --${k}`)
  }

  const { store, config } = openStore(stringFlag(values, 'config'))
  try {
    if (sub === 'list') {
      expectPositionals(positionals, [])
      const users = await store.list()
      if (json) out(JSON.stringify(users.map((u) => ({ user: u.username, enabled: u.enabled, createdAt: u.createdAt }))) + '\n')
      else out(users.length === 0 ? 'no users\n' : users.map((u) => `${u.username}\t${u.enabled ? 'enabled' : 'disabled'}\t${u.createdAt}\n`).join(''))
      return
    }
    if (sub === 'export') {
      expectPositionals(positionals, [])
      await exportUsers(store, out)
      return
    }
    if (sub === 'import') {
      const file = expectPositionals(positionals, ['FILE'])[0] as string
      if (store.readOnly !== undefined) throw new BastionError('BASTION_ERR_INVALID_INPUT', store.readOnly)
      await importUsers(store, file, out)
      return
    }
    const name = checkName(expectPositionals(positionals, ['NAME'])[0] as string)
    if (sub !== 'otp' && store.readOnly !== undefined) throw new BastionError('BASTION_ERR_INVALID_INPUT', store.readOnly)
    switch (sub) {
      case 'add': {
        if ((await store.find(name)) !== undefined) throw new BastionError('BASTION_ERR_USER_EXISTS', `user ${name} already exists`)
        const secret = secretFrom(stringFlag(values, 'totp-secret'))
        const password = await passwordFrom(stringFlag(values, 'password'))
        await store.add({ username: name, passwordHash: bcrypt.hashSync(password, BCRYPT_COST), totpSecret: secret, enabled: true, createdAt: new Date().toISOString() })
        await printSecret(out, name, secret, json, qr, 'added user')
        return
      }
      case 'disable':
      case 'enable':
        await store.update(name, { enabled: sub === 'enable' })
        if (sub === 'disable') await tellCluster(config, name)
        out(`${sub}d user ${name}\n`)
        return
      case 'remove':
        await store.remove(name)
        await tellCluster(config, name)
        out(`removed user ${name}\n`)
        return
      case 'passwd': {
        await requireUser(store, name)
        const password = await passwordFrom(stringFlag(values, 'password'))
        await store.update(name, { passwordHash: bcrypt.hashSync(password, BCRYPT_COST) })
        await tellCluster(config, name)
        out(`changed password of ${name}\n`)
        return
      }
      case 'rotate-totp': {
        await requireUser(store, name)
        const secret = secretFrom(stringFlag(values, 'totp-secret'))
        await store.update(name, { totpSecret: secret })
        await tellCluster(config, name)
        await printSecret(out, name, secret, json, qr, 'new TOTP secret for')
        return
      }
      case 'otp': {
        const u = await requireUser(store, name)
        out(usableCode(u, config) + '\n')
      }
    }
  } finally {
    await store.close()
  }
}

/** In a cluster every node re-checks `name`'s live sessions now; the change is stored either way. */
async function tellCluster (config: BastionConfig, name: string): Promise<void> {
  if (config.cluster === undefined) return
  try {
    // Loaded only here: the other commands need no Redis client.
    const { openClusterAdmin } = await import('../cluster/admin.js')
    const admin = await openClusterAdmin(config.cluster, cliStoreLogger())
    try { await admin.revoke(name) } finally { await admin.close() }
  } catch (err) {
    process.stderr.write(`mqtt-bastion: the cluster's Redis was not told (${(err as Error).message}): running brokers end ${name}'s sessions at their next re-check (auth.recheckInterval)
`)
  }
}

async function requireUser (store: UserStore, name: string): Promise<NonNullable<Awaited<ReturnType<UserStore['find']>>>> {
  const u = await store.find(name)
  if (u === undefined) throw new BastionError('BASTION_ERR_USER_UNKNOWN', `no such user: ${name}`)
  return u
}
