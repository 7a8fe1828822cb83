// Pure topic and filter helpers. Topic semantics are MQTT 3.1.1 §4.7 / MQTT 5 §4.7.

/** `$SYS/...` and every other `$` topic are the server's; clients never touch them [MQTT-4.7.2-1]. */
export function isReserved (topicOrFilter: string): boolean {
  return topicOrFilter.startsWith('$')
}

export function hasWildcard (topic: string): boolean {
  return topic.includes('+') || topic.includes('#')
}

/**
 * True when every topic `filter` can match lies strictly below the `prefix` levels, e.g.
 * `metrics/alice/#` within [metrics, alice]. A wildcard at or above the prefix (`#`,
 * `metrics/#`, `+/alice/#`) could reach another branch, so it is outside. `metrics/alice/#`
 * also matches `metrics/alice` itself [MQTT-4.7.1-2]; that level is the owner's own.
 */
export function filterWithin (filter: string, prefix: readonly string[]): boolean {
  const levels = filter.split('/')
  if (levels.length <= prefix.length) return false
  for (let i = 0; i < prefix.length; i++) {
    if (levels[i] !== prefix[i]) return false
  }
  return true
}

/** True when `topic` (no wildcards) lies strictly below the `prefix` levels. */
export function topicWithin (topic: string, prefix: readonly string[]): boolean {
  return filterWithin(topic, prefix) && !hasWildcard(topic)
}
