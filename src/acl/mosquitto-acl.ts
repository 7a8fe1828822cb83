// Mosquitto's `acl_file`, with the semantics of Mosquitto 2.0.11: the parser follows
// aclfile__parse and the check follows mosquitto_acl_check_default (src/security_default.c),
// acl__check_dollar (src/security.c) and mosquitto_topic_matches_sub (lib/util_topic.c).
// Written from a reading of that code, not copied from it.
import { readFileSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { BastionError } from '../errors.js'
import { ALLOW, deny, type Action, type Decision, type Identity } from '../types.js'
import type { AclPolicy } from './policy.js'

const READ = 1
const WRITE = 2
const DENY = 0 // Mosquitto's MOSQ_ACL_NONE

export interface MosquittoAclRule {
  /** A topic filter; in a pattern, `%u` and `%c` are replaced by user name and client id. */
  readonly filter: string
  /** Bit set: 1 read, 2 write; 0 is a `deny` line. */
  readonly access: number
}

export interface MosquittoAcl {
  /** `topic` lines before the first `user` line. Mosquitto applies them only to clients
   *  without a user name; this broker admits no such client, so they are parsed and kept for
   *  `config check` but never consulted. */
  readonly anonymous: readonly MosquittoAclRule[]
  /** Repeated `user` sections for the same name add to one list, as in Mosquitto. */
  readonly users: ReadonlyMap<string, readonly MosquittoAclRule[]>
  /** `pattern` lines apply to every client, wherever they appear in the file. */
  readonly patterns: readonly MosquittoAclRule[]
}

const ACCESS = new Map([['read', READ], ['write', WRITE], ['readwrite', READ | WRITE], ['deny', DENY]])
// C isspace() in the "C" locale; Mosquitto trims with it. JS \s would also eat Unicode spaces.
const TRAILING_SPACE = /[ \t\n\v\f\r]+$/
const TRIM = /^[ \t\n\v\f\r]+|[ \t\n\v\f\r]+$/g
const HIERARCHY_LIMIT = 200 // TOPIC_HIERARCHY_LIMIT: at most this many `/` in a filter

/** strtok(" ") from `from`: the next space-separated token and where the text after it starts. */
function token (line: string, from: number): { text: string, next: number } | undefined {
  let i = from
  while (line[i] === ' ') i++
  if (i >= line.length) return undefined
  let j = i
  while (j < line.length && line[j] !== ' ') j++
  return { text: line.slice(i, j), next: Math.min(j + 1, line.length) }
}

/** mosquitto_sub_topic_check: `+` and `#` fill a whole level, `#` only last; bounded size. */
function filterProblem (filter: string): string | undefined {
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i] as string
    if (level.length > 1 && (level.includes('+') || level.includes('#'))) return `"+" and "#" must fill a whole topic level in "${filter}"`
    if (level === '#' && i !== levels.length - 1) return `"#" must be the last topic level in "${filter}"`
  }
  if (Buffer.byteLength(filter) > 65535) return 'topic longer than 65535 bytes'
  if (levels.length - 1 > HIERARCHY_LIMIT) return `topic deeper than ${HIERARCHY_LIMIT} levels`
  return undefined
}

/**
 * Parses the text of a Mosquitto acl_file. Throws BastionError BASTION_ERR_CONFIG naming the
 * file and line for every line Mosquitto 2.0.11 refuses to start with, and for `topic read`
 * with no topic (see below).
 */
export function parseMosquittoAcl (text: string, file: string): MosquittoAcl {
  const anonymous: MosquittoAclRule[] = []
  const users = new Map<string, MosquittoAclRule[]>()
  const patterns: MosquittoAclRule[] = []
  let current: MosquittoAclRule[] = anonymous
  const lines = text.split('\n')
  for (let n = 0; n < lines.length; n++) {
    const bad = (what: string): BastionError => new BastionError('BASTION_ERR_CONFIG', `acl file ${file}:${n + 1}: ${what}`)
    const line = (lines[n] as string).replace(TRAILING_SPACE, '')
    // Only a `#` in the first column starts a comment; Mosquitto refuses an indented one.
    if (line.startsWith('#')) continue
    const keyword = token(line, 0)
    if (keyword === undefined) continue
    if (keyword.text === 'user') {
      const name = line.slice(keyword.next).replace(TRIM, '')
      if (name === '') throw bad('missing user name after "user"')
      current = users.get(name) ?? []
      users.set(name, current)
    } else if (keyword.text === 'topic' || keyword.text === 'pattern') {
      const second = token(line, keyword.next)
      if (second === undefined) throw bad(`missing topic after "${keyword.text}"`)
      const rest = line.slice(second.next).replace(TRIM, '')
      let access = READ | WRITE
      let filter = second.text
      if (rest !== '') {
        // Everything after the access word is the topic: it may contain spaces.
        const a = ACCESS.get(filter)
        if (a === undefined) throw bad(`unknown access "${filter}" (read, write, readwrite or deny)`)
        access = a
        filter = rest
      } else if (ACCESS.has(filter)) {
        // Mosquitto reads `topic read` as readwrite on a topic named "read"; that is always a
        // forgotten topic, so it is refused here instead of becoming a grant.
        throw bad(`missing topic after "${keyword.text} ${filter}"`)
      }
      const problem = filterProblem(filter)
      if (problem !== undefined) throw bad(`invalid topic: ${problem}`)
      const rule = { filter, access }
      const list = keyword.text === 'topic' ? current : patterns
      // Mosquitto moves deny lines to the front; only their presence matters to the check.
      if (access === DENY) list.unshift(rule)
      else list.push(rule)
    } else {
      const hint = keyword.text.includes('\t') ? ' (fields are separated by spaces, not tabs)' : keyword.text.startsWith('#') ? ' (a comment must start in the first column)' : ''
      throw bad(`unknown keyword ${JSON.stringify(keyword.text)}${hint}`)
    }
  }
  return { anonymous, users, patterns }
}

/** Filters of one kind, split for the hot path: exact topics in a Set, wildcards as levels. */
interface Group { readonly exact: Set<string>, readonly wild: string[][], readonly all: string[] }

function group (filters: Iterable<string>): Group {
  const g: Group = { exact: new Set(), wild: [], all: [] }
  for (const f of filters) {
    g.all.push(f)
    if (f.includes('+') || f.includes('#')) g.wild.push(f.split('/'))
    else g.exact.add(f)
  }
  return g
}

interface RuleSet { readonly deny: Group, readonly read: Group, readonly write: Group }

function ruleSet (rules: readonly MosquittoAclRule[]): RuleSet {
  const with_ = (pred: (a: number) => boolean): Group => group(rules.filter((r) => pred(r.access)).map((r) => r.filter))
  return { deny: with_((a) => a === DENY), read: with_((a) => (a & READ) !== 0), write: with_((a) => (a & WRITE) !== 0) }
}

/** Level-wise MQTT matching; for valid filters and topics it agrees with mosquitto_topic_matches_sub. */
function levelsMatch (filter: readonly string[], topic: readonly string[]): boolean {
  for (let i = 0; i < filter.length; i++) {
    const f = filter[i]
    if (f === '#') return true // also matches the parent level: `a/#` matches `a` [MQTT-4.7.1-2]
    if (i >= topic.length) return false
    if (f !== '+' && f !== topic[i]) return false
  }
  return filter.length === topic.length
}

/** Whether some topic matches both filters (for `$` subscriptions, which need a grant). */
function filtersIntersect (a: readonly string[], b: readonly string[]): boolean {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i]
    const y = b[i]
    if (x === '#' || y === '#') return true
    if (x === undefined || y === undefined) return false
    if (x !== '+' && y !== '+' && x !== y) return false
  }
  return true
}

function matches (g: Group, topic: string, levels: () => string[]): boolean {
  if (g.exact.has(topic)) return true
  if (g.wild.length === 0) return false
  const dollar = topic.startsWith('$')
  const t = levels()
  // A wildcard in the first level never matches a `$` topic [MQTT-4.7.2-1]; a `$` rule starts
  // with a literal level, so comparing first characters is enough.
  for (const f of g.wild) if (((f[0] as string).startsWith('$')) === dollar && levelsMatch(f, t)) return true
  return false
}

interface Compiled { readonly user?: RuleSet, readonly patterns?: RuleSet, readonly unsafe: boolean }

// Mosquitto refuses pattern access to a client whose user name or client id contains + or #,
// so it cannot widen a pattern. A `/` is refused too (Mosquitto substitutes it): it would add
// levels, and client id `bob/x` would reach into `devices/bob/...` under `devices/%c/#`.
const UNSAFE = /[+#/]/

function substitute (filter: string, identity: Identity): string {
  // One left-to-right pass, like Mosquitto: substituted text is not scanned again.
  return filter.replace(/%([uc])/g, (_m, k: string) => k === 'u' ? identity.user : identity.clientId)
}

export interface MosquittoAclOptions {
  /** Absolute path of the acl_file. */
  file: string
  /** `$SYS` is readable only when this is true AND the file grants it. */
  allowSys: boolean
}

/**
 * An AclPolicy from a Mosquitto acl_file. `decide` always answers synchronously.
 * @example
 * const policy = createMosquittoAclPolicy({ file: '/etc/mosquitto/acl', allowSys: false })
 * policy.decide(identity, 'publish', 'devices/alice/temp') // { allow: true } or a deny
 */
export function createMosquittoAclPolicy (opts: MosquittoAclOptions): AclPolicy & { reload (): Promise<void> } {
  const load = (text: string): { acl: MosquittoAcl, users: Map<string, RuleSet> } => {
    const acl = parseMosquittoAcl(text, opts.file)
    return { acl, users: new Map([...acl.users].map(([name, rules]) => [name, ruleSet(rules)])) }
  }
  let state = load(readText(opts.file))
  // Identity objects live as long as their connection: compile each client's rules once.
  let cache = new WeakMap<Identity, Compiled>()

  function compiled (identity: Identity): Compiled {
    let c = cache.get(identity)
    if (c === undefined) {
      const { acl, users } = state
      c = {
        user: users.get(identity.user),
        patterns: acl.patterns.length === 0
          ? undefined
          : ruleSet(acl.patterns.map((r) => ({ filter: substitute(r.filter, identity), access: r.access }))),
        unsafe: UNSAFE.test(identity.user) || UNSAFE.test(identity.clientId)
      }
      cache.set(identity, c)
    }
    return c
  }

  /** mosquitto_acl_check_default for one concrete topic: user rules first, then patterns. */
  function check (c: Compiled, topic: string, access: typeof READ | typeof WRITE): Decision {
    let split: string[] | undefined
    const levels = (): string[] => (split ??= topic.split('/'))
    const grants = (s: RuleSet): Group => access === READ ? s.read : s.write
    if (c.user !== undefined) {
      if (matches(c.user.deny, topic, levels)) return deny('denied by acl deny rule')
      if (matches(grants(c.user), topic, levels)) return ALLOW
    }
    if (c.patterns !== undefined) {
      if (c.unsafe) return deny('user name or client id contains + # or /')
      if (matches(c.patterns.deny, topic, levels)) return deny('denied by acl deny pattern')
      if (matches(grants(c.patterns), topic, levels)) return ALLOW
    }
    return deny(access === READ ? 'no acl grants read' : 'no acl grants write')
  }

  /** A `$` filter: only with allowSys, and only where some read rule could deliver from it. */
  function dollarSubscribe (c: Compiled, filter: string): Decision {
    const f = filter.split('/')
    const sets = [c.user, c.unsafe ? undefined : c.patterns]
    for (const s of sets) {
      for (const r of s?.read.all ?? []) if (r.startsWith('$') && filtersIntersect(r.split('/'), f)) return ALLOW
    }
    return deny('no acl grants read on this $ filter')
  }

  return {
    name: 'mosquitto-acl',
    decide (identity: Identity, action: Action, topic: string): Decision {
      const c = compiled(identity)
      if (topic.startsWith('$')) {
        // acl__check_dollar: $SYS is never written by clients (bridges aside), $share is
        // only a subscription prefix; aedes offers no shared subscriptions, so none here.
        if (topic.startsWith('$share')) return deny('shared subscriptions are not available')
        if (!opts.allowSys) return deny('reserved $ topic')
        if (action === 'publish' && topic.startsWith('$SYS')) return deny('$SYS is not writable')
        if (action === 'subscribe') return dollarSubscribe(c, topic)
      }
      switch (action) {
        case 'publish': return check(c, topic, WRITE)
        case 'read': return check(c, topic, READ)
        // Mosquitto 2.0's acl_file grants every subscription and checks each delivery
        // (MOSQ_ACL_SUBSCRIBE returns success). Kept: a subscription made before a reload
        // that grants read starts receiving without resubscribing, as under Mosquitto.
        case 'subscribe': return ALLOW
      }
    },
    async reload () {
      const next = load(await readFile(opts.file, 'utf8').catch((err: NodeJS.ErrnoException) => unreadable(opts.file, err)))
      state = next
      cache = new WeakMap()
    }
  }
}

function unreadable (file: string, err: NodeJS.ErrnoException): never {
  throw new BastionError('BASTION_ERR_CONFIG', `acl file ${file}: cannot be read (${err.code ?? err.message})`, { cause: err })
}

function readText (file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    return unreadable(file, err as NodeJS.ErrnoException)
  }
}
