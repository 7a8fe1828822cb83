import { createServer, type Socket } from 'node:net'
import type { TcpListenerConfig } from '../config/schema.js'
import type { Logger } from '../log.js'
import { bind, type ConnectionHandler, type Listener, type ListenerLimits } from './listener.js'
import { proxyGateFor } from './proxy-protocol.js'

/** Plain MQTT for local tools only; off unless configured, loopback unless a host is given. */
export async function startTcpListener (cfg: TcpListenerConfig, handle: ConnectionHandler, log: Logger, limits?: ListenerLimits): Promise<Listener> {
  // With proxyProtocol: trusted proxies only, admitted under the address their header gives.
  const proxy = proxyGateFor(cfg.proxyProtocol, log, limits)
  const admitted = (socket: Socket): void => {
    if (limits !== undefined && !limits.admit(socket)) {
      socket.destroy()
      return
    }
    handle(socket)
  }
  // TCP_NODELAY, as the TLS listener (tls.ts says why).
  const server = createServer({ noDelay: true }, (socket) => {
    if (proxy === undefined) admitted(socket)
    else proxy.accept(socket, admitted)
  })
  const listener = await bind(server, 'tcp', cfg.host, cfg.port)
  log.warn({ event: 'listener.started', type: 'tcp', host: cfg.host, port: listener.port, ...(cfg.proxyProtocol === undefined ? {} : { proxyProtocol: cfg.proxyProtocol }) }, 'UNENCRYPTED plain MQTT listener started: passwords and codes cross it in clear text')
  return listener
}
