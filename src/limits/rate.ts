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
 * one for what they carry. A client that starts full may send one second's worth at once, then
 * at most the rate on average.
 */
function createBuckets (perSecond: number, unitsPerSecond: number, now: number): { take (units: number, t: number): 'count' | 'units' | undefined } {
  let count = perSecond
  let units = unitsPerSecond
  let last = now
  return {
    take (size, t) {
      const elapsed = Math.max(0, t - last) / 1000
      last = t
      count = Math.min(perSecond, count + elapsed * perSecond)
      units = Math.min(unitsPerSecond, units + elapsed * unitsPerSecond)
      if (count < 1) return 'count'
      if (units < size) return 'units'
      count -= 1
      units -= size
      return undefined
    }
  }
}

export function createPublishBucket (rate: PublishRate, now: number): PublishBucket {
  const b = createBuckets(rate.messages, rate.bytes, now)
  return {
    take (bytes, t) {
      const over = b.take(bytes, t)
      return over === undefined ? undefined : over === 'count' ? 'messages' : 'bytes'
    }
  }
}

/** A packet with more filters than `rate.filters` is always over the rate. */
export function createSubscribeBucket (rate: SubscribeRate, now: number): SubscribeBucket {
  const b = createBuckets(rate.packets, rate.filters, now)
  return {
    take (filters, t) {
      const over = b.take(filters, t)
      return over === undefined ? undefined : over === 'count' ? 'packets' : 'filters'
    }
  }
}
