// A throwaway redis-server (Debian package) for the cluster tests: no config file, its own
// temp dir, a free port on 127.0.0.1, nothing saved to disk; stopped and removed at the end.
// stop() and start() keep the port, for tests of a Redis that goes away and comes back.
// With `tls`, it serves TLS only (`--port 0 --tls-port`), with a CA, server and client
// certificate issued by src/certs into its dir.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { connect, type Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect as tlsConnect } from 'node:tls'
import { initCertificates, issueClientCertificate } from '../../src/certs/issue.js'
import { freePort } from './ports.js'
import { stopChild } from './stop-child.mjs'

const READY_TIMEOUT_MS = 10_000
const STOP_TIMEOUT_MS = 5_000

export interface RedisServer {
  readonly host: string
  readonly port: number
  readonly dir: string
  /** With `tls`: the files a client needs (the CA that signed Redis' certificate, a client certificate and key). */
  readonly tls?: RedisTlsFiles
  /** Starts it again on the same port (after stop). */
  start (): Promise<void>
  /** SIGTERM, SIGKILL after 5 s; resolves once it has exited. */
  stop (): Promise<void>
  /** Stops it and removes its dir. */
  close (): Promise<void>
}

export interface RedisTlsFiles {
  /** The CA of Redis' certificate (for 127.0.0.1 and localhost) and of the client certificate. */
  readonly ca: string
  readonly cert: string
  readonly key: string
}

function findRedisServer (): string {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/bin', '/usr/sbin'])) {
    if (dir !== '' && existsSync(join(dir, 'redis-server'))) return join(dir, 'redis-server')
  }
  throw new Error('redis-server not found: install Debian package redis-server (bash scripts/install-test-deps.sh does it)')
}

const sleep = async (ms: number): Promise<void> => await new Promise((resolve) => setTimeout(resolve, ms))

/** One PING over a raw socket (RESP inline command): true when +PONG comes back. */
async function pong (port: number, password?: string, tls?: RedisTlsFiles): Promise<boolean> {
  return await new Promise((resolve) => {
    const s: Socket = tls === undefined
      ? connect({ port, host: '127.0.0.1' })
      : tlsConnect({ port, host: '127.0.0.1', ca: readFileSync(tls.ca), cert: readFileSync(tls.cert), key: readFileSync(tls.key) })
    let data = ''
    const timer = setTimeout(() => { s.destroy(); resolve(false) }, 1000)
    s.on(tls === undefined ? 'connect' : 'secureConnect', () => s.write(`${password === undefined ? '' : `AUTH ${password}\r\n`}PING\r\n`))
    s.on('data', (d) => {
      data += d.toString()
      if (data.includes('+PONG')) { clearTimeout(timer); s.destroy(); resolve(true) }
    })
    s.on('error', () => { clearTimeout(timer); resolve(false) })
  })
}

/**
 * `password` sets requirepass (for the tests that check it never reaches a log line). `tls`:
 * TLS only on `port`; `authClients` is Redis' `tls-auth-clients` (`yes`: a client certificate
 * signed by the CA is required, `optional`: checked when given).
 */
export async function startRedisServer (opts: { password?: string; tls?: { authClients: 'yes' | 'optional' } } = {}): Promise<RedisServer> {
  const bin = findRedisServer()
  const dir = mkdtempSync(join(tmpdir(), 'bastion-redis-'))
  const port = await freePort()
  let tls: RedisTlsFiles | undefined
  let listen = ['--port', String(port)]
  if (opts.tls !== undefined) {
    const certs = await initCertificates({ outDir: join(dir, 'tls') })
    tls = { ca: certs.caCert, ...await issueClientCertificate({ name: 'redis-client', dir: join(dir, 'tls') }) }
    listen = ['--port', '0', '--tls-port', String(port), '--tls-cert-file', certs.serverCert, '--tls-key-file', certs.serverKey,
      '--tls-ca-cert-file', certs.caCert, '--tls-auth-clients', opts.tls.authClients]
  }
  let child: ChildProcess | undefined
  let output = ''
  const killOnExit = (): void => { child?.kill('SIGKILL') }
  process.on('exit', killOnExit)

  async function start (): Promise<void> {
    if (child !== undefined) return
    const args = [...listen, '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no',
      '--daemonize', 'no', '--logfile', '', ...(opts.password === undefined ? [] : ['--requirepass', opts.password])]
    const c = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    child = c
    c.stdout?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-4000) })
    c.stderr?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-4000) })
    const deadline = Date.now() + READY_TIMEOUT_MS
    while (Date.now() < deadline && c.exitCode === null) {
      if (await pong(port, opts.password, tls)) return
      await sleep(50)
    }
    c.kill('SIGKILL')
    child = undefined
    throw new Error(`redis-server did not answer PING on 127.0.0.1:${port} within ${READY_TIMEOUT_MS / 1000} s: ${output}`)
  }

  async function stop (): Promise<void> {
    const c = child
    if (c === undefined) return
    child = undefined
    await stopChild(c, STOP_TIMEOUT_MS)
  }

  await start()
  return {
    host: '127.0.0.1',
    port,
    dir,
    ...(tls === undefined ? {} : { tls }),
    start,
    stop,
    async close () {
      await stop()
      process.off('exit', killOnExit)
      rmSync(dir, { recursive: true, force: true })
    }
  }
}
