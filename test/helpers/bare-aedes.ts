// A bare aedes (our patched engine, none of our hooks) over plain TCP on 127.0.0.1, closed at
// the end of the test: for tests of the engine's own behaviour (test/engine).
import { createServer, type AddressInfo } from 'node:net'
import { Aedes, type EngineOptions } from '../../src/engine/aedes.js'

export async function startBareBroker (t: Tap.Test, options: EngineOptions = {}): Promise<{ broker: Aedes; port: number }> {
  const broker = await Aedes.createBroker(options)
  const server = createServer((s) => broker.handle(s))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    server.close()
    await new Promise<void>((resolve) => broker.close(() => resolve()))
  })
  return { broker, port: (server.address() as AddressInfo).port }
}
