// The broker and the CLI rewrite one users file from two processes: neither may undo the other.
import t from 'tap'
import { existsSync, utimesSync, writeFileSync, unlinkSync } from 'node:fs'
import { join } from 'node:path'
import { createFileStore } from '../../src/stores/file.js'
import { scratch } from '../helpers/scratch.js'

const scratchDir = scratch('bastion-lock-')

const record = (username: string) => ({ username, passwordHash: '$2b$04$x', totpSecret: 'A'.repeat(32), enabled: true, createdAt: '2026-01-01T00:00:00.000Z' })

t.test('a user disabled by one process while another claims TOTP steps stays disabled', async (t) => {
  const path = join(scratchDir(), 'users.json')
  // Two stores on one file behave as two processes: separate queues, separate caches.
  const broker = createFileStore(path)
  const cli = createFileStore(path)
  await cli.add(record('victim'))
  await cli.add(record('busy'))
  let lost = 0
  for (let i = 0; i < 40; i++) {
    await cli.update('victim', { enabled: true })
    await Promise.all([broker.claimStep('busy', 1000 + i), cli.update('victim', { enabled: false })])
    if ((await broker.find('victim'))?.enabled !== false) lost++
  }
  t.equal(lost, 0, 'no disable was overwritten by a concurrent login')
  t.equal((await cli.find('busy'))?.lastStep, 1039, 'and no claimed step was lost')
  t.equal(existsSync(`${path}.lock`), false, 'the lock is gone afterwards')
})

t.test('a lock left by a crashed process is taken over; a live one is waited for', async (t) => {
  const path = join(scratchDir(), 'users.json')
  const s = createFileStore(path)
  await s.add(record('alice'))
  const lock = `${path}.lock`
  writeFileSync(lock, '')
  const old = new Date(Date.now() - 60_000)
  utimesSync(lock, old, old)
  await s.update('alice', { enabled: false })
  t.equal((await s.find('alice'))?.enabled, false, 'a stale lock does not block the store')

  writeFileSync(lock, '')
  let done = false
  const pending = s.update('alice', { enabled: true }).then(() => { done = true })
  await new Promise((resolve) => setTimeout(resolve, 200))
  t.equal(done, false, 'waits while another process holds the lock')
  unlinkSync(lock)
  await pending
  t.equal((await s.find('alice'))?.enabled, true, 'and goes on once it is released')
})
