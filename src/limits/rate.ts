/** A client's publish allowance: messages and payload bytes per second, one second of burst. */
export interface PublishRate { readonly messages: number; readonly bytes: number }

export interface PublishBucket {
  /** Takes one message of `bytes` when both allowances cover it; otherwise which one ran out. */
  take (bytes: number, now: number): 'messages' | 'bytes' | undefined
}

/**
 * Two token buckets refilled continuously (`now` in milliseconds, monotonic). A client that
 * starts full may send one second's worth at once, then at most the rate on average.
 */
export function createPublishBucket (rate: PublishRate, now: number): PublishBucket {
  let messages = rate.messages
  let bytes = rate.bytes
  let last = now
  return {
    take (size, t) {
      const elapsed = Math.max(0, t - last) / 1000
      last = t
      messages = Math.min(rate.messages, messages + elapsed * rate.messages)
      bytes = Math.min(rate.bytes, bytes + elapsed * rate.bytes)
      if (messages < 1) return 'messages'
      if (bytes < size) return 'bytes'
      messages -= 1
      bytes -= size
      return undefined
    }
  }
}
