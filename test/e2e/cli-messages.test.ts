// What CLI commands tell the user: the first command that opens the SQLite store beside an old
// users.json migrates it (the file is renamed), which must be said on stderr, not done silently,
// with stdout left to the command's own output; and usage errors that name their command.
import t from 'tap'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { cliFolder, runCli } from '../helpers/cli-folder.js'
import { scratch } from '../helpers/scratch.js'

const root = scratch('bastion-cli-migrate-')()

t.test('user list beside a users.json migrates it and says so on stderr', async (t) => {
  const legacy = cliFolder(root, 'legacy', 'auth:\n  store: { type: file, path: data/users.json }\nlog: { level: warn }\n')
  const added = await runCli(legacy, ['user', 'add', 'old-device', '--password', 'old-device-password', '--json'])
  t.equal(added.code, 0, added.stderr)
  // The same folder, now configured with the SQLite store (the default file name beside it).
  writeFileSync(join(legacy, 'bastion.yaml'), 'auth:\n  store: { type: sqlite, path: data/users.db }\nlog: { level: warn }\n')
  const list = await runCli(legacy, ['user', 'list'])
  t.equal(list.code, 0, list.stderr)
  t.match(list.stdout, /old-device/, 'the migrated user is listed')
  t.notMatch(list.stdout, /migrated/, 'stdout carries only the list')
  t.match(list.stderr, /^mqtt-bastion: migrated 1 users from .*users\.json into .*users\.db \(the JSON file is kept as users\.json\.migrated\)\n$/)
  t.ok(existsSync(join(legacy, 'data', 'users.json.migrated')))
  const again = await runCli(legacy, ['user', 'list'])
  t.equal(again.stderr, '', 'said once: the next command has nothing to migrate')
})

t.test('a usage error names the command it is about and where its help is', async (t) => {
  const dir = cliFolder(root, 'usage')
  const r = await runCli(dir, ['user', 'import'])
  t.equal(r.code, 2)
  t.equal(r.stderr, 'mqtt-bastion user import: expected FILE (see mqtt-bastion user --help)\n')
})
