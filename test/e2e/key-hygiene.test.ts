// Key hygiene as the operator meets it through `mqtt-bastion start`: the server certificate's
// expiry in the log at start (a warning within 30 days), and a one-line refusal to start when a
// private key or the user store is readable by group or others.
import t from 'tap'
import { chmodSync } from 'node:fs'
import { join } from 'node:path'
import { cliBrokerFolder } from '../helpers/cli-broker.js'

async function expiryAtStart (certDays?: number): Promise<Record<string, any>> {
  const folder = await cliBrokerFolder(certDays === undefined ? {} : { certDays })
  t.teardown(() => folder.close())
  const broker = await folder.start(folder.config())
  const line = await broker.waitFor('certs.expiry')
  broker.kill()
  return line
}

t.test('a server certificate expiring within 30 days is a warning at start', async (t) => {
  const line = await expiryAtStart(10)
  t.match(line, { level: 40, event: 'certs.expiry', cert: /server\.crt$/, expires: /^\d{4}-\d\d-\d\dT/ }, 'certs.expiry at warn, with the file and the date')
  t.ok(line.days >= 9 && line.days <= 10, `days left: ${String(line.days)}`)
})

t.test('a certificate with longer to live is logged at info with its expiry date', async (t) => {
  const soon = await expiryAtStart(45)
  t.match(soon, { level: 30, event: 'certs.expiry', cert: /server\.crt$/ }, '45 days: info')
  const usual = await expiryAtStart()
  t.match(usual, { level: 30, event: 'certs.expiry' }, 'the default 825 days: info')
  t.ok(usual.days > 800, `days left: ${String(usual.days)}`)
})

t.test('start refuses a private key or user store others can read, in one line with the chmod', async (t) => {
  const folder = await cliBrokerFolder()
  t.teardown(() => folder.close())
  await folder.addUser('alice')
  const cfg = folder.config()
  const key = join(folder.dir, 'certs', 'server.key')
  const users = join(folder.dir, 'data', 'users.json')
  for (const [file, mode] of [[key, 0o640], [users, 0o604]] as const) {
    chmodSync(file, mode)
    const r = await folder.cli('start', '--config', cfg)
    t.equal(r.code, 1, `${file} mode ${mode.toString(8)}: exit 1`)
    t.equal(r.stderr.trimEnd().split('\n').length, 1, 'one line')
    t.match(r.stderr, `readable by group or others (mode ${mode.toString(8)}); fix it with: chmod 600 ${file}`, 'naming the file and the fix')
    chmodSync(file, 0o600)
  }
})
