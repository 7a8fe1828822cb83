import { open, readFile, rename, stat, mkdir, unlink } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import { dirname, basename, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { BastionError } from '../errors.js'
import { assertPrivate } from './permissions.js'
import type { UserPatch, UserRecord, UserStore } from './store.js'

type StoredUser = UserRecord
interface FileShape { version: 1; users: StoredUser[] }

// A read-modify-write takes milliseconds; a lock older than this was left by a crashed process.
const STALE_LOCK_MS = 10_000
const LOCK_WAIT_MS = 5_000

/**
 * The embedded store: one JSON file, rewritten whole and atomically (temp file, fsync, rename)
 * so a crash leaves either the old or the new file, never half of one. The file is re-read
 * when it changes on disk, so `mqtt-bastion user add` takes effect in a running broker.
 */
export function createFileStore (path: string): UserStore {
  let cache: FileShape | undefined
  let cacheKey = ''
  // TOTP steps accepted by this process; survives a re-read that races a CLI write.
  const claimed = new Map<string, number>()
  // Writes are serialized: each read-modify-write waits for the one before it.
  let queue: Promise<unknown> = Promise.resolve()

  async function load (): Promise<FileShape> {
    let key: string
    try {
      const s = await stat(path)
      key = `${s.ino}:${s.size}:${s.mtimeMs}`
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { version: 1, users: [] }
      throw storeError(err)
    }
    if (cache !== undefined && key === cacheKey) return cache
    await assertPrivate(path, 'user store')
    let doc: unknown
    const text = await readFile(path, 'utf8').catch((err: unknown) => { throw storeError(err) })
    try {
      doc = JSON.parse(text)
    } catch (err) {
      // Node's message quotes the text around the fault, which may be a hash or a TOTP secret.
      const at = /position (\d+)/.exec((err as Error).message)?.[1]
      throw new BastionError('BASTION_ERR_USER_STORE', `user store ${path} is not valid JSON${at === undefined ? '' : ` (at character ${at})`}`)
    }
    if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as FileShape).users)) {
      throw new BastionError('BASTION_ERR_USER_STORE', `user store ${path} is not a mqtt-bastion users file`)
    }
    cache = doc as FileShape
    cacheKey = key
    return cache
  }

  function storeError (err: unknown): BastionError {
    return new BastionError('BASTION_ERR_USER_STORE', `user store ${path}: ${(err as Error).message}`, { cause: err })
  }

  async function write (doc: FileShape): Promise<void> {
    await mkdir(dirname(path), { recursive: true, mode: 0o700 })
    const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`)
    const fh = await open(tmp, 'wx', 0o600)
    try {
      await fh.writeFile(JSON.stringify(doc, null, 2) + '\n')
      await fh.chmod(0o600) // the umask may have narrowed the mode we asked for; never widened it
      await fh.sync()
    } finally {
      await fh.close()
    }
    try {
      await rename(tmp, path)
    } catch (err) {
      await unlink(tmp).catch(() => {})
      throw storeError(err)
    }
    cache = undefined
  }

  /**
   * The broker (a TOTP step on every login) and the CLI (user disable) both rewrite the file:
   * without a lock between processes the later rename silently undoes the other's change.
   */
  async function locked<T> (fn: () => Promise<T>): Promise<T> {
    const lock = `${path}.lock`
    await mkdir(dirname(path), { recursive: true, mode: 0o700 })
    const deadline = Date.now() + LOCK_WAIT_MS
    for (;;) {
      try {
        await (await open(lock, 'wx', 0o600)).close()
        break
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw storeError(err)
      }
      const age = await stat(lock).then((s) => Date.now() - s.mtimeMs, () => 0)
      if (age > STALE_LOCK_MS) await unlink(lock).catch(() => {})
      else if (Date.now() > deadline) throw new BastionError('BASTION_ERR_USER_STORE', `user store ${path} is locked by another process (${lock}); remove the lock file if no mqtt-bastion is running`)
      else await sleep(5 + Math.random() * 20)
    }
    try {
      return await fn()
    } finally {
      await unlink(lock).catch(() => {})
    }
  }

  function mutate<T> (fn: (doc: FileShape) => T): Promise<T> {
    const run = queue.then(async () => await locked(async () => {
      const doc = structuredClone(await load())
      const result = fn(doc)
      await write(doc)
      return result
    }))
    queue = run.catch(() => {})
    return run
  }

  function indexOf (doc: FileShape, username: string): number {
    const i = doc.users.findIndex((u) => u.username === username)
    if (i < 0) throw new BastionError('BASTION_ERR_USER_UNKNOWN', `no such user: ${username}`)
    return i
  }

  function publicRecord (u: StoredUser): UserRecord {
    return {
      username: u.username,
      passwordHash: u.passwordHash,
      totpSecret: u.totpSecret,
      enabled: u.enabled !== false,
      createdAt: u.createdAt,
      ...(u.lastStep === undefined ? {} : { lastStep: u.lastStep })
    }
  }

  return {
    async find (username) {
      const u = (await load()).users.find((x) => x.username === username)
      return u === undefined ? undefined : publicRecord(u)
    },
    async claimStep (username, step) {
      const onDisk = (await load()).users.find((x) => x.username === username)?.lastStep ?? -1
      // No await between this check and the set: two logins with one code cannot both pass.
      if (step <= Math.max(onDisk, claimed.get(username) ?? -1)) return false
      claimed.set(username, step)
      await mutate((doc) => {
        const i = doc.users.findIndex((x) => x.username === username)
        const u = doc.users[i]
        if (u !== undefined) doc.users[i] = { ...u, lastStep: Math.max(u.lastStep ?? -1, step) }
      })
      return true
    },
    async add (record) {
      await mutate((doc) => {
        if (doc.users.some((u) => u.username === record.username)) {
          throw new BastionError('BASTION_ERR_USER_EXISTS', `user ${record.username} already exists`)
        }
        doc.users.push({ ...record })
      })
    },
    async addMany (records) {
      await mutate((doc) => {
        // Every name is checked before any is pushed: a clash leaves the file as it was.
        const stored = new Set(doc.users.map((u) => u.username))
        const batch = new Set<string>()
        for (const r of records) {
          if (stored.has(r.username)) throw new BastionError('BASTION_ERR_USER_EXISTS', `user ${r.username} already exists`)
          if (batch.has(r.username)) throw new BastionError('BASTION_ERR_USER_EXISTS', `user ${r.username} appears twice in the batch`)
          batch.add(r.username)
        }
        for (const r of records) doc.users.push({ ...r })
      })
    },
    async update (username, patch) {
      await mutate((doc) => {
        const i = indexOf(doc, username)
        const u = doc.users[i] as StoredUser
        doc.users[i] = { ...u, ...patch }
      })
    },
    async remove (username) {
      await mutate((doc) => { doc.users.splice(indexOf(doc, username), 1) })
      claimed.delete(username)
    },
    async list () {
      return (await load()).users.map(publicRecord)
    },
    async ping () {
      await load()
    },
    async close () {
      await queue
    }
  }
}
