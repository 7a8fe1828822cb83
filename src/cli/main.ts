#!/usr/bin/env node
import { readFileSync } from 'node:fs'
import { isBastionError } from '../errors.js'
import { UsageError } from './args.js'

const HELP = `Usage: mqtt-bastion <command> [options]

A security-hardened MQTT broker: TLS, "user|TOTP" + bcrypt logins, per-user ACLs.

Commands:
  start [--config FILE] [--workers N]   run the broker (N processes sharing the ports)
  certs init --out DIR [...]            create a private CA and a server certificate
  certs client NAME --out DIR           issue a client certificate
  certs revoke NAME --out DIR           revoke a client certificate (writes the CRL)
  user add|list|disable|enable|remove|passwd|rotate-totp|otp|import|export ...
                                        manage users
  clientid list|release ...             client ids bound to their users (auth.clientIdBinding owner)
  config check [--config FILE]          validate a configuration
  db check|migrate [--config FILE]      inspect / extend a MySQL users table
  device publish|subscribe ...          the device client: readings (cron), subscribe

Run "mqtt-bastion <command> --help" for a command's options.
Exit status: 0 on success, 1 on failure, 2 on a usage error.
`

const out = (s: string): void => { process.stdout.write(s) }

async function main (argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv
  switch (cmd) {
    case undefined:
      // A missing command is a usage error (scripts must not mistake it for success).
      process.stderr.write(HELP)
      process.exitCode = 2
      return
    case '--help':
    case '-h':
    case 'help':
      out(HELP)
      return
    case '--version':
    case '-v': {
      const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
      out(pkg.version + '\n')
      return
    }
    // Each command loads only what it needs: `user` and `device` must not load the broker.
    case 'start': return await (await import('./start.js')).startCommand(rest, out)
    case 'certs': return await (await import('./certs.js')).certsCommand(rest, out)
    case 'user': return await (await import('./user.js')).userCommand(rest, out)
    case 'clientid': return await (await import('./clientid.js')).clientIdCommand(rest, out)
    case 'config': return await (await import('./config.js')).configCommand(rest, out)
    case 'db': return await (await import('./db.js')).dbCommand(rest, out)
    case 'device': return await (await import('./device.js')).deviceCommand(rest, out)
    default:
      throw new UsageError(`unknown command: ${cmd} (see mqtt-bastion --help)`)
  }
}

// Commands whose first argument is a subcommand (`user import`, `certs init`, ...).
const WITH_SUBCOMMANDS = new Set(['certs', 'user', 'clientid', 'config', 'db', 'device'])
const COMMANDS = new Set([...WITH_SUBCOMMANDS, 'start'])

/** `user import` for `user import` (a usage error names the command it is about, and its help). */
function commandOf (args: string[]): string | undefined {
  const [cmd, sub] = args
  if (cmd === undefined || !COMMANDS.has(cmd)) return undefined
  return WITH_SUBCOMMANDS.has(cmd) && sub !== undefined && /^[a-z-]+$/.test(sub) ? `${cmd} ${sub}` : cmd
}

const argv = process.argv.slice(2)
main(argv).catch((err: unknown) => {
  if (err instanceof UsageError) {
    const cmd = commandOf(argv)
    process.stderr.write(cmd === undefined || err.message.includes('--help') ? `mqtt-bastion: ${err.message}\n` : `mqtt-bastion ${cmd}: ${err.message} (see mqtt-bastion ${cmd.split(' ')[0] ?? ''} --help)\n`)
    process.exitCode = 2
  } else if (isBastionError(err)) {
    process.stderr.write(`mqtt-bastion: ${err.message}\n`)
    process.exitCode = 1
  } else {
    process.stderr.write(`mqtt-bastion: unexpected error: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
    process.exitCode = 1
  }
})
