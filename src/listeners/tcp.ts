import { createServer } from 'node:net'
import type { TcpListenerConfig } from '../config/schema.js'
import type { Logger } from '../log.js'
import { bind, type ConnectionHandler, type Listener, type ListenerLimits } from './listener.js'

/** Plain MQTT for local tools only; off unless configured, loopback unless a host is given. */
export async function startTcpListener (cfg: TcpListenerConfig, handle: ConnectionHandler, log: Logger, limits?: ListenerLimits): Promise<Listener> {
  // TCP_NODELAY, as the TLS listener (tls.ts says why).
  const server = createServer({ noDelay: true }, (socket) => {
    if (limits !== undefined && !limits.admit(socket)) {
      socket.destroy()
      return
    }
    handle(socket)
  })
  const listener = await bind(server, 'tcp', cfg.host, cfg.port)
  log.warn({ event: 'listener.started', type: 'tcp', host: cfg.host, port: listener.port }, 'UNENCRYPTED plain MQTT listener started: passwords and codes cross it in clear text')
  return listener
}
