// Ports for the real servers tests start themselves (Mosquitto, HAProxy, Redis, a container):
// a free one on 127.0.0.1, and waiting until something accepts on one.
import { connect, createServer, type AddressInfo } from 'node:net'

/** A port free on 127.0.0.1 right now (the kernel's pick; the caller binds it next). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo
      s.close(() => resolve(port))
    })
  })
}

/**
 * Resolves once something accepts a TCP connection on 127.0.0.1:`port`, probing every 100 ms
 * from `localAddress` (e.g. one no assertion names); throws naming `what` (the server) after `ms`.
 */
export async function accepting (port: number, ms: number, what?: string, localAddress?: string): Promise<void> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect({ port, host: '127.0.0.1', ...(localAddress === undefined ? {} : { localAddress }) }, () => { s.destroy(); resolve(true) })
      s.on('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  throw new Error(`${what === undefined ? 'nothing accepts' : `${what} does not accept`} on 127.0.0.1:${port} after ${ms} ms`)
}
