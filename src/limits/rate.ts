/** A client's publish allowance: messages and payload bytes per second, one second of burst. */
export interface PublishRate { readonly messages: number; readonly bytes: number }

/** A client's SUBSCRIBE / UNSUBSCRIBE allowance: packets and the filters they carry, per second. */
export interface SubscribeRate { readonly packets: number; readonly filters: number }

export interface PublishBucket {
  /** Takes one message of `bytes` when both allowances cover it; otherwise which one ran out. */
  take (bytes: number, now: number): 'messages' | 'bytes' | undefined
}

export interface SubscribeBucket {
  /** Takes one packet of `filters` when both allowances cover it; otherwise which one ran out. */
  take (filters: number, now: number): 'packets' | 'filters' | undefined
}

/**
 * Two token buckets refilled continuously (`now` in milliseconds, monotonic): one for packets,
 * one for what they carry, reporting which ran out by the names given. A client that starts
 * full may send one second's worth at once, then at most the rate on average.
 */
function createBuckets<C extends string, U extends string> (perSecond: number, unitsPerSecond: number, now: number, names: readonly [C, U]): { take (units: number, t: number): C | U | undefined } {
  let count = perSecond
  let units = unitsPerSecond
  let last = now
  return {
    take (size, t) {
      const elapsed = Math.max(0, t - last) / 1000
      last = t
      count = Math.min(perSecond, count + elapsed * perSecond)
      units = Math.min(unitsPerSecond, units + elapsed * unitsPerSecond)
      if (count < 1) return names[0]
      if (units < size) return names[1]
      count -= 1
      units -= size
      return undefined
    }
  }
}

export function createPublishBucket (rate: PublishRate, now: number): PublishBucket {
  return createBuckets(rate.messages, rate.bytes, now, ['messages', 'bytes'] as const)
}

/** A packet with more filters than `rate.filters` is always over the rate. */
export function createSubscribeBucket (rate: SubscribeRate, now: number): SubscribeBucket {
  return createBuckets(rate.packets, rate.filters, now, ['packets', 'filters'] as const)
}
