import type { Server, Socket } from 'node:net'
import { BastionError } from '../errors.js'

/** A bound server socket that hands each accepted connection to the broker. */
export interface Listener {
  readonly type: 'tls' | 'tcp' | 'wss'
  /** The address actually bound (port 0 in config becomes the real port here). */
  readonly host: string
  readonly port: number
  /** Whether the server socket is bound and accepting right now. */
  readonly listening: boolean
  /** Re-reads certificate, key, CA and CRL files (TLS only); throws and keeps the old ones when they are unusable. */
  reload? (): Promise<void>
  close (): Promise<void>
}

export type ConnectionHandler = (socket: Socket) => void

/** What a listener applies to a socket before the broker sees it (config `limits`). */
export interface ListenerLimits {
  /** Asked once per accepted socket, before any TLS work: false means refuse (the listener destroys it). */
  admit (socket: Socket): boolean
  /**
   * Counts a socket in the total before its PROXY header says whose it is (admit follows with
   * the real address and does not count it twice): false means refuse.
   */
  hold? (socket: Socket): boolean
  /** Milliseconds a TLS handshake may take. */
  readonly tlsHandshakeTimeout: number
  /** Told of a TLS handshake that did not finish in time (the socket is closed). */
  handshakeTimedOut (remote: string | undefined): void
  /** The largest MQTT packet accepted (bytes): a listener that frames packets (wss) bounds its frames by it. */
  readonly maxPacketSize?: number
}

const LISTEN_BACKLOG = 4096

/** Binds `server`, turning EADDRINUSE and friends into one line that names the address. */
export async function bind (server: Server, type: Listener['type'], host: string, port: number): Promise<Listener> {
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException): void => {
      const hint = err.code === 'EADDRINUSE' ? ': another program (another broker, Mosquitto?) holds that port; stop it or set another listeners[].port'
        : err.code === 'EACCES' ? ': ports below 1024 need privileges; use 8883 or a capability' : ''
      reject(new BastionError('BASTION_ERR_LISTEN', `cannot listen on ${host}:${port} (${type}): ${err.code ?? err.message}${hint}`))
    }
    server.once('error', onError)
    // A fleet reconnecting at once (after an outage) sends thousands of SYNs together; Node's
    // default backlog of 511 drops the rest, and they wait for the kernel's 1 s retransmit.
    // The kernel caps it at net.core.somaxconn.
    server.listen({ port, host, backlog: LISTEN_BACKLOG }, () => {
      server.off('error', onError)
      resolve()
    })
  })
  const addr = server.address()
  const bound = typeof addr === 'object' && addr !== null ? addr.port : port
  return {
    type,
    host,
    port: bound,
    get listening () { return server.listening },
    async close () {
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}
