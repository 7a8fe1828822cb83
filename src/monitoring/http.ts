import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { isIP } from 'node:net'
import { BastionError } from '../errors.js'
import type { Logger } from '../log.js'
import type { HealthCheck } from './health.js'

export interface MonitoringServer {
  /** The address actually bound (port 0 in config becomes the real port here). */
  readonly host: string
  readonly port: number
  close (): Promise<void>
}

/** What /metrics serves: one broker's registry (BrokerMetrics), or a `start --workers` primary's sum. */
export interface MetricsSource {
  readonly contentType: string
  /** The exposition text, or why there is none now (answered 503 with that line). */
  text (): Promise<string | { readonly unavailable: string }>
}

export interface MonitoringDeps {
  metrics: MetricsSource
  health: HealthCheck
  log: Logger
}

function isLoopback (host: string): boolean {
  return host === 'localhost' || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'))
}

function send (res: ServerResponse, status: number, type: string, body: string, head: boolean): void {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    // Always the live state: a cached 200 would hide an outage.
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff'
  })
  res.end(head ? undefined : body)
}

/**
 * GET /healthz (200 "ok" or 503 with the reason) and GET /metrics (Prometheus text) for
 * supervisors and scrapers. Read-only and without credentials, hence loopback by default.
 */
export async function startMonitoringServer (cfg: { host: string; port: number }, deps: MonitoringDeps): Promise<MonitoringServer> {
  const { metrics, health, log } = deps
  const text = 'text/plain; charset=utf-8'

  async function route (req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://monitoring.invalid').pathname
    if (path !== '/healthz' && path !== '/metrics') return send(res, 404, text, 'not found\n', false)
    const head = req.method === 'HEAD'
    if (req.method !== 'GET' && !head) {
      res.setHeader('allow', 'GET, HEAD')
      return send(res, 405, text, 'method not allowed\n', false)
    }
    if (path === '/metrics') {
      const body = await metrics.text()
      if (typeof body === 'string') return send(res, 200, metrics.contentType, body, head)
      return send(res, 503, text, `${body.unavailable}\n`, head)
    }
    const problem = await health()
    send(res, problem === undefined ? 200 : 503, text, `${problem ?? 'ok'}\n`, head)
  }

  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => {
      log.error({ event: 'monitoring.error', err }, 'monitoring request failed')
      if (!res.headersSent) send(res, 500, text, 'internal error\n', false)
      else res.destroy()
    })
  })
  // Small bounds: the only clients are a health checker and a scraper.
  server.headersTimeout = 5000
  server.requestTimeout = 10_000
  server.keepAliveTimeout = 5000
  server.maxConnections = 64

  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      reject(new BastionError('BASTION_ERR_LISTEN', `cannot listen on ${cfg.host}:${cfg.port} (monitoring): ${err.code ?? err.message}`))
    }
    server.once('error', onError)
    server.listen(cfg.port, cfg.host, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const addr = server.address()
  const port = typeof addr === 'object' && addr !== null ? addr.port : cfg.port
  const entry = { event: 'listener.started', type: 'monitoring', host: cfg.host, port }
  if (isLoopback(cfg.host)) log.info(entry, 'monitoring listener started (/healthz, /metrics)')
  else log.warn(entry, 'monitoring listener started on a non-loopback address: /metrics and /healthz answer anyone who can reach it')
  return {
    host: cfg.host,
    port,
    async close () {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      // A scraper's idle keep-alive connection must not hold the shutdown.
      server.closeAllConnections()
      await closed
    }
  }
}
