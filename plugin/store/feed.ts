// The revocation feed on Redis: a connection of its own subscribed to the revocation channel, which keeps
// proving it has missed nothing. Every HEARTBEAT_MS it sends a PING on that connection (answered in order
// after every message published before it); a Cluster subscribes through a connection of its own choosing,
// which a PING on the Cluster would not reach, so there the proof is a message the instance publishes to a
// channel of its own and hears back. Each answer tells the handlers "everything published before `at` has
// arrived" (onAlive); plugin/revocation.ts decides how long memory is trusted after the last one.
import { randomBytes } from 'node:crypto'
import type { Redis } from 'ioredis'
import { isCluster, keepConnected, ownClientOptions, type Client } from './connections.js'
import type { RevocationFeedHandlers } from './index.js'

/** How often the feed's connection proves it is alive. */
const HEARTBEAT_MS = 100

export interface FeedOptions {
  /** The store's client: the feed duplicates it (a subscribed connection can run no other command). */
  client: Client
  channel: string
  /** Bound on subscribing; how long subscribeFeed waits before resolving anyway. */
  timeoutMs: number
  /** A connection that has answered nothing for this long is replaced. */
  stalenessMs: number
}

export interface Feed {
  /** The feed's own connection (closed by the store). */
  subscriber: Client
  /** Stops the heartbeat. */
  stop: () => void
}

/** Parses a message of the revocation channel: a session id, or an epoch ('~u:<at>:<userId>', '~*:<at>'). */
export function feedMessage (message: string, handlers: RevocationFeedHandlers): void {
  if (message.startsWith('~u:')) {
    const colon = message.indexOf(':', 3)
    const at = Number(message.slice(3, colon))
    if (colon > 3 && Number.isFinite(at)) handlers.onEpoch(message.slice(colon + 1), at)
  } else if (message.startsWith('~*:')) {
    const at = Number(message.slice(3))
    if (Number.isFinite(at)) handlers.onEpoch(undefined, at)
  } else {
    handlers.onRevoked(message)
  }
}

async function within<T> (p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`Redis did not answer within ${ms}ms`)), ms) })])
  } finally {
    clearTimeout(timer)
  }
}

/** Subscribes; resolves once subscribed (or after timeoutMs: the feed then comes up when Redis does). */
export async function subscribeFeed (opts: FeedOptions, handlers: RevocationFeedHandlers): Promise<Feed> {
  const { client, channel } = opts
  const sub: Client = isCluster(client)
    ? client.duplicate()
    // No command timeout: the heartbeat judges its own PINGs (and would read an ioredis timeout as a miss).
    : client.duplicate({ ...ownClientOptions(opts.timeoutMs), commandTimeout: undefined })
  if (!isCluster(sub)) keepConnected(sub)
  let subscribed = false
  const down = (): void => {
    if (!subscribed) return
    subscribed = false
    handlers.onState(false)
  }
  sub.on('error', () => { /* the feed reports down on close; reconnects by itself */ })
  const cluster = isCluster(sub)
  const probeChannel = `${channel}:alive:${randomBytes(8).toString('hex')}`
  let answeredAt = Date.now()
  sub.on('message', (from: string, message: string) => {
    if (from === channel) {
      feedMessage(message, handlers)
    } else if (from === probeChannel) {
      const at = Number(message)
      if (subscribed && Number.isFinite(at)) { answeredAt = Date.now(); handlers.onAlive(at) }
    }
  })
  const probe = (): void => {
    const at = Date.now()
    if (cluster) {
      client.publish(probeChannel, String(at)).catch(() => { /* a miss: the staleness bound decides */ })
    } else {
      (sub as Redis).ping().then(() => {
        if (!subscribed) return
        answeredAt = Date.now()
        handlers.onAlive(at)
      }, () => {})
    }
  }
  const up = async (): Promise<void> => {
    try {
      await within(cluster ? sub.subscribe(channel, probeChannel) : sub.subscribe(channel), opts.timeoutMs)
      subscribed = true
      answeredAt = Date.now()
      handlers.onState(true)
    } catch {
      down()
    }
  }
  sub.on('close', down)
  // A probe every HEARTBEAT_MS, without waiting for the last one: after a stall (Redis paused, or busy) the
  // answers arrive together and the latest proves the feed alive up to the stall's end. A connection that
  // has answered nothing for the staleness bound is presumed dead (a partition that holds bytes and resets
  // nothing) and replaced; the new one subscribes, and the revocations are loaded again.
  const heartbeat = setInterval(() => {
    if (!subscribed) return
    if (Date.now() - answeredAt > opts.stalenessMs) {
      down()
      sub.disconnect(true)
      return
    }
    probe()
  }, HEARTBEAT_MS)
  heartbeat.unref()
  await new Promise<void>(resolve => {
    const t = setTimeout(resolve, opts.timeoutMs)
    const ready = (): void => { up().finally(() => { clearTimeout(t); resolve() }).catch(() => {}) }
    sub.on('ready', ready)
    if (sub.status === 'ready') ready()
  })
  return { subscriber: sub, stop: () => { clearInterval(heartbeat) } }
}
