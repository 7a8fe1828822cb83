// Stops a server process a test started (mariadbd, redis-server): SIGTERM, then SIGKILL if it
// has not exited within `ms`. Resolves once it has exited; at once if it already had.
/** @param {import('node:child_process').ChildProcess} c @param {number} ms @returns {Promise<void>} */
export async function stopChild (c, ms) {
  if (c.exitCode !== null || c.signalCode !== null) return
  await new Promise((resolve) => {
    const timer = setTimeout(() => c.kill('SIGKILL'), ms)
    c.once('exit', () => { clearTimeout(timer); resolve(undefined) })
    c.kill('SIGTERM')
  })
}
