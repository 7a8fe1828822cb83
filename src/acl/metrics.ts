import { ALLOW, deny, type Decision } from '../types.js'
import type { AclPolicy } from './policy.js'
import { filterWithin, isReserved, topicWithin } from './topics.js'

export interface MetricsPolicyOptions {
  prefix: string
  leaves: readonly string[]
}

/**
 * The default policy: a device writes only `<prefix>/<user>/<leaf>` for the configured leaves
 * and reads only below `<prefix>/<user>/`. No superusers; `$` topics are closed to everyone.
 */
export function createMetricsPolicy (opts: MetricsPolicyOptions): AclPolicy {
  const leaves = new Set(opts.leaves)
  return {
    name: 'metrics',
    decide (identity, action, topic): Decision {
      if (isReserved(topic)) return deny('reserved $ topic')
      const branch = [opts.prefix, identity.user]
      switch (action) {
        case 'publish': {
          const levels = topic.split('/')
          return levels.length === 3 && topicWithin(topic, branch) && leaves.has(levels[2] as string)
            ? ALLOW
            : deny('publish outside own metrics leaves')
        }
        case 'subscribe':
          return filterWithin(topic, branch) ? ALLOW : deny('filter can match outside own branch')
        case 'read':
          return topicWithin(topic, branch) ? ALLOW : deny('topic outside own branch')
      }
    }
  }
}
