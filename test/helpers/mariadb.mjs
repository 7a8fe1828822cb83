// A throwaway MariaDB server for tests and benchmarks: its own data dir, socket and free port
// on 127.0.0.1, stopped at the end. Plain JavaScript so plain-node benchmarks can use it too.
import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import mysql from 'mysql2/promise'
import { stopChild } from './stop-child.mjs'

const READY_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 15_000

function findBinary (name) {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/bin', '/usr/local/sbin'])) {
    if (dir !== '' && existsSync(join(dir, name))) return join(dir, name)
  }
  throw new Error('MariaDB server not found: install Debian package mariadb-server (bash scripts/install-test-deps.sh does it)')
}

function freePort () {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const rand = () => randomBytes(6).toString('hex')

/**
 * Starts a throwaway MariaDB server, or uses env MYSQL_URL when set (whose user must be able to
 * CREATE DATABASE and CREATE USER; then stop/start are impossible and `canRestart` is false).
 * @returns {Promise<{ host: string, port: number, rootUrl: string, canRestart: boolean,
 *   start(): Promise<void>, stop(): Promise<void>, close(): Promise<void>,
 *   createDatabase(name?: string): Promise<{ database: string, user: string, password: string, url: string }> }>}
 */
export async function startMariaDb () {
  if (process.env.MYSQL_URL) return external(new URL(process.env.MYSQL_URL))
  const installDb = findBinary('mariadb-install-db')
  const mariadbd = findBinary('mariadbd')
  const dir = mkdtempSync(join(tmpdir(), 'bastion-mariadb-'))
  const data = join(dir, 'data')
  const asRoot = process.getuid?.() === 0 ? ['--user=root'] : []
  const init = spawnSync(installDb, ['--no-defaults', `--datadir=${data}`, '--auth-root-authentication-method=normal', '--skip-test-db', ...asRoot], { encoding: 'utf8', timeout: 120_000 })
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true })
    throw new Error(`mariadb-install-db failed: ${(init.stdout + init.stderr).slice(-2000)}`)
  }
  const port = await freePort()
  const rootUrl = `mysql://root@127.0.0.1:${port}/`
  let child
  const killOnExit = () => child?.kill('SIGKILL')
  process.on('exit', killOnExit)

  async function start () {
    if (child !== undefined) return
    const errorLog = join(dir, 'error.log')
    child = spawn(mariadbd, ['--no-defaults', `--datadir=${data}`, `--socket=${join(dir, 'mysqld.sock')}`, `--port=${port}`,
      '--bind-address=127.0.0.1', `--pid-file=${join(dir, 'mysqld.pid')}`, `--log-error=${errorLog}`, '--skip-name-resolve',
      '--innodb-buffer-pool-size=32M', '--max-connections=200', ...asRoot], { stdio: 'ignore' })
    let exited = false
    child.once('exit', () => { exited = true })
    const deadline = Date.now() + READY_TIMEOUT_MS
    while (Date.now() < deadline && !exited) {
      try {
        const c = await mysql.createConnection({ host: '127.0.0.1', port, user: 'root', connectTimeout: 1000 })
        await c.query('SELECT 1')
        await c.end()
        return
      } catch {
        await sleep(200)
      }
    }
    const tail = existsSync(errorLog) ? readFileSync(errorLog, 'utf8').slice(-2000) : ''
    child.kill('SIGKILL')
    child = undefined
    throw new Error(`mariadbd did not accept connections within ${READY_TIMEOUT_MS / 1000} s: ${tail}`)
  }

  async function stop () {
    const c = child
    if (c === undefined) return
    child = undefined
    await stopChild(c, STOP_TIMEOUT_MS)
  }

  await start()
  return {
    host: '127.0.0.1',
    port,
    rootUrl,
    canRestart: true,
    start,
    stop,
    async close () {
      await stop()
      process.off('exit', killOnExit)
      rmSync(dir, { recursive: true, force: true })
    },
    createDatabase: (name) => createDatabase({ host: '127.0.0.1', port, user: 'root' }, name)
  }
}

async function createDatabase (admin, name = `db_${rand()}`) {
  const user = `u_${rand()}`
  const password = rand() + rand()
  const c = await mysql.createConnection({ ...admin, connectTimeout: 5000 })
  try {
    await c.query(`CREATE DATABASE ${mysql.escapeId(name)}`)
    for (const host of ['127.0.0.1', 'localhost']) {
      await c.query('CREATE USER ?@? IDENTIFIED BY ?', [user, host, password])
      await c.query(`GRANT ALL ON ${mysql.escapeId(name)}.* TO ?@?`, [user, host])
    }
  } finally {
    await c.end()
  }
  return { database: name, user, password, url: `mysql://${user}:${password}@${admin.host}:${admin.port}/${name}` }
}

function external (u) {
  const admin = { host: u.hostname, port: Number(u.port || 3306), user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) }
  const nothing = async () => {}
  return {
    host: admin.host,
    port: admin.port,
    rootUrl: u.toString(),
    canRestart: false,
    start: nothing,
    stop: nothing,
    close: nothing,
    createDatabase: (name) => createDatabase(admin, name)
  }
}
