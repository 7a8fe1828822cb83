import type { ListenerConfig } from '../config/schema.js'
import type { Logger } from '../log.js'
import type { ConnectionHandler, Listener, ListenerLimits } from './listener.js'
import { startTcpListener } from './tcp.js'
import { startTlsListener } from './tls.js'
import { startWssListener } from './wss.js'

/** Binds one configured listener of any type; `handle` gets each admitted connection. */
export async function startListener (l: ListenerConfig, handle: ConnectionHandler, log: Logger, limits: ListenerLimits): Promise<Listener> {
  switch (l.type) {
    case 'tls': return await startTlsListener(l, handle, log, limits)
    case 'wss': return await startWssListener(l, handle, log, limits)
    case 'tcp': return await startTcpListener(l, handle, log, limits)
  }
}
