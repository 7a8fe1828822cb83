// README's walkthrough and docs/devices.md's "Try it on this machine", run as written: the
// command blocks are read out of the Markdown (not copied here), so the docs cannot drift from
// what the broker does. They run in a copy of the repository's tracked files (npx builds it, as
// in a fresh clone), against the Quick start's `npm start` on its documented port 8883 (bound to
// 127.0.0.1 through BASTION_HOST), in the order the documents give, in one shell, so `kill %1`
// finds the subscriber started by an earlier block. What the prose promises is read out of it too.
import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { createConnection } from 'node:net'
import { homedir } from 'node:os'
import { join, resolve } from 'node:path'
import { scratch } from '../helpers/scratch.js'

const REPO = process.cwd()
const PORT = 8883
const SCRIPT_MS = 150_000

/** The ```sh blocks of `markdown` between `from` (a heading) and the next heading of its level. */
function section (markdown: string, from: string): string {
  const start = markdown.indexOf(`\n${from}\n`)
  if (start < 0) throw new Error(`heading not found: ${from}`)
  const level = /^#+/.exec(from)?.[0] ?? '##'
  const rest = markdown.slice(start + from.length + 2)
  const next = rest.search(new RegExp(`\\n${level} `))
  return next < 0 ? rest : rest.slice(0, next)
}
function shBlocks (text: string): string[] {
  return [...text.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] ?? '')
}
/** The first `code` span after `words` in `text`. */
function spanAfter (text: string, words: string): string {
  const at = text.indexOf(words)
  if (at < 0) throw new Error(`not in the docs: ${words}`)
  const m = /`([^`]+)`/.exec(text.slice(at + words.length))
  if (m === null) throw new Error(`no code span after: ${words}`)
  return m[1] ?? ''
}

function portFree (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port })
    s.once('connect', () => { s.destroy(); resolve(false) })
    s.once('error', () => resolve(true))
  })
}

const readme = readFileSync(join(REPO, 'README.md'), 'utf8')
const devices = readFileSync(join(REPO, 'docs', 'devices.md'), 'utf8')
const quick = section(readme, '## Quick start')
const walk = section(readme, '## Walkthrough: a metric delivered, a spoof refused')
const tryIt = section(devices, '### Try it on this machine')

t.test('README walkthrough and the device flow of docs/devices.md run as written', async (t) => {
  t.equal(shBlocks(quick)[0], 'npm install && npm start\n', 'the Quick start is what this test runs (npm install: as CI did)')
  t.ok(await portFree(PORT), `port ${PORT} is free (the docs use it; stop what listens there)`)

  // A fresh clone's files: the tracked ones, as they are in the work tree; node_modules as
  // `npm install` left it (hard links: nothing here writes into it).
  const dir = scratch('bastion-walkthrough-')()
  const files = execFileSync('git', ['ls-files', '-z'], { cwd: REPO, encoding: 'utf8' }).split('\0').filter((f) => f !== '' && existsSync(join(REPO, f)))
  for (let i = 0; i < files.length; i += 200) execFileSync('cp', ['--parents', '-t', dir, ...files.slice(i, i + 200)], { cwd: REPO })
  execFileSync('cp', ['-al', join(REPO, 'node_modules'), join(dir, 'node_modules')])
  execFileSync('cp', ['-a', join(REPO, 'dist'), join(dir, 'dist')])
  // npx links a project's own bin from its cache folder (~/.npm/_npx/HASH -> this folder): gone
  // with the folder, so the links are removed too.
  t.teardown(() => removeNpxLinks(dir))

  const env: NodeJS.ProcessEnv = { ...process.env, BASTION_HOST: '127.0.0.1', NO_COLOR: '1' }
  for (const k of ['BASTION_CONFIG', 'BASTION_PORT', 'BASTION_USERS_FILE', 'BASTION_LOG_LEVEL']) delete env[k]
  const broker = spawn('npm', ['start'], { cwd: dir, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  let log = ''
  broker.stdout.setEncoding('utf8').on('data', (s: string) => { log += s })
  broker.stderr.setEncoding('utf8').on('data', (s: string) => { log += s })
  const exited = new Promise<void>((resolve) => broker.once('exit', () => resolve()))
  t.teardown(async () => {
    try { process.kill(-(broker.pid ?? 0), 'SIGTERM') } catch {}
    const timer = setTimeout(() => { try { process.kill(-(broker.pid ?? 0), 'SIGKILL') } catch {} }, 10_000)
    await exited
    clearTimeout(timer)
  })
  const started = Date.now()
  while (!log.includes('"broker.ready"') && Date.now() - started < 60_000 && broker.exitCode === null) await new Promise((r) => setTimeout(r, 200))
  t.match(log, /"event":"broker\.ready"/, 'npm start reached broker.ready')
  t.match(log, /"event":"store\.empty"/, 'and says nobody can log in yet, as the Quick start promises')
  // The broker npm start runs gets the malloc setting of docs/deploy.md ("Memory").
  const readyPid = Number(/"pid":(\d+)[^\n]*"event":"broker\.ready"|"event":"broker\.ready"[^\n]*"pid":(\d+)/.exec(log)?.slice(1).find((x) => x !== undefined))
  const brokerEnv = readFileSync(`/proc/${readyPid}/environ`, 'utf8').split('\0')
  t.ok(brokerEnv.includes('GLIBC_TUNABLES=glibc.malloc.mmap_threshold=65536'), `npm start's broker (pid ${readyPid}) runs with GLIBC_TUNABLES`)

  // One shell for every block, in document order; markers split what each printed.
  const stopSubscriber = spanAfter(walk, 'Stop the subscriber with')
  t.equal(stopSubscriber, 'kill %1')
  const blocks = [...shBlocks(walk), stopSubscriber + '\nsleep 1\n', ...shBlocks(tryIt)]
  const script = blocks.map((b, i) => `echo '@@block ${i}'\n${b}`).join('\n') + '\necho "@@end"\n'
  writeFileSync(join(dir, 'walkthrough.sh'), script)
  const run = spawn('bash', ['walkthrough.sh'], { cwd: dir, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  run.stdout.setEncoding('utf8').on('data', (s: string) => { out += s })
  run.stderr.setEncoding('utf8').on('data', (s: string) => { out += s })
  const timer = setTimeout(() => { try { process.kill(-(run.pid ?? 0), 'SIGKILL') } catch {} }, SCRIPT_MS)
  await new Promise<void>((resolve) => run.once('close', () => resolve()))
  clearTimeout(timer)
  t.match(out, /@@end/, 'every block ran to the end')
  if (!out.includes('@@end') || !log.includes('"acl.denied"')) t.comment(`blocks printed:\n${out}\nbroker log:\n${log.slice(-4000)}`)
  const printed = out.split(/^@@block \d+\n/m).slice(1)
  t.equal(printed.length, blocks.length)

  // 2. the subscriber prints what was published
  const promised = spanAfter(walk, 'The subscriber prints')
  t.ok(out.includes(promised), `the subscriber printed: ${promised}`)
  // 3. bob is refused, and it is logged
  const warning = spanAfter(walk, 'mosquitto_pub\'s output begins with')
  t.ok(printed[2]?.split('\n').some((l) => l.startsWith(warning)), `bob's publish printed: ${warning}`)
  t.notOk(out.includes('{"value":-40}'), 'the subscriber printed nothing of bob\'s')
  const denied = log.split('\n').filter((l) => l.includes('"acl.denied"')).map((l) => JSON.parse(l) as Record<string, unknown>)
  t.match(denied, [{ user: 'bob', action: 'publish', topic: 'metrics/alice/Temperatura' }], 'acl.denied names bob, the action and the topic')
  t.match(denied[0], { clientId: String, remote: String })
  // 4. MQTT.js
  const step4 = walk.slice(walk.indexOf('**4. The same with MQTT.js.**'))
  for (const words of ['It prints', 'It prints `connected`,', 'Temperatura {"value":22.5}` and']) {
    const line = spanAfter(step4, words)
    t.ok(printed[3]?.includes(line), `examples/mqttjs.mjs printed: ${line}`)
  }
  // kill %1: the server will of alice
  t.match(log, /"event":"will\.published","user":"alice".*"topic":"metrics\/alice\/Estado","source":"server"/, 'alice\'s server will was published when her subscriber was killed')
  // docs/devices.md: the readings the comments at the end of its block promise
  const expected = (shBlocks(tryIt)[0] ?? '').split('\n').filter((l) => l.startsWith('# metrics/')).map((l) => l.slice(2))
  t.equal(expected.length, 3)
  for (const line of expected) t.ok(printed[5]?.split('\n').includes(line), `the device subscriber printed: ${line}`)
})

function removeNpxLinks (dir: string): void {
  const cache = join(homedir(), '.npm', '_npx')
  let entries: string[] = []
  try { entries = readdirSync(cache) } catch { return }
  for (const e of entries) {
    const link = join(cache, e, 'node_modules', 'mqtt-bastion')
    try {
      if (resolve(join(cache, e, 'node_modules'), readlinkSync(link)) === dir) rmSync(join(cache, e), { recursive: true, force: true })
    } catch {}
  }
}
