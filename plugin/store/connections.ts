// Redis connections: the client a user may pass (ioredis 5 or 6, by what it can do, never by its class), the
// options of the connections tokengate opens itself, and keeping a Sentinel client connected through a
// failover that ioredis would otherwise take as final.
import type { Cluster, Redis, RedisOptions } from 'ioredis'

/**
 * A Redis client of yours for tokengate to use: an ioredis `Redis` or `Cluster` instance of ioredis 5 or 6.
 * Written out as the few members both majors share, not as ioredis's classes, so an instance made by your
 * own copy of ioredis, whichever major, is accepted (ioredis's classes of one copy do not accept another's).
 */
export interface RedisClient {
  readonly status: string
  /** true on a `Cluster`, false on a `Redis` (ioredis 5 and 6 both say so). */
  readonly isCluster: boolean
  defineCommand: (name: string, definition: { lua: string, numberOfKeys?: number }) => void
  quit: () => Promise<unknown>
  disconnect: () => void
}

/** How the store calls a client: through ioredis 6's types, the API every accepted client shares. */
export type Client = Redis | Cluster

/** Options for the connections tokengate opens itself: fail fast while Redis is away, reconnect forever. */
export function ownClientOptions (timeoutMs: number): RedisOptions {
  return {
    enableOfflineQueue: false,
    commandTimeout: timeoutMs,
    maxRetriesPerRequest: 1,
    connectTimeout: Math.max(timeoutMs, 1000),
    retryStrategy: (times: number) => Math.min(50 * times, 1000)
  }
}

const closedByUs = new WeakSet<object>()

/**
 * ioredis ends a Sentinel client for good when its failover detector hears +switch-master while the client
 * is asking a sentinel where the master is: the pending connect is rejected ("Connection is closed.") and
 * ioredis takes that as final, so every command fails until a restart. A client given to keepConnected
 * that ends without closingClient connects again (every 100 ms until it is back).
 */
export function keepConnected (client: Redis): void {
  client.on('end', () => {
    if (closedByUs.has(client)) return
    setTimeout(() => {
      if (!closedByUs.has(client) && client.status === 'end') client.connect().catch(() => { /* ends again: retried */ })
    }, 100).unref()
  })
}

/** Marks a client as closed on purpose (keepConnected leaves it closed). */
export function closingClient (client: object): void {
  closedByUs.add(client)
}

/**
 * Whether a client is a Cluster. Asked of the client, never with `instanceof`: a user's client may come from
 * another copy or major of ioredis than ours.
 */
export function isCluster (client: Client): client is Cluster {
  return client.isCluster
}

/** Whether a client carries a command timeout (ioredis then bounds every call on it). */
export function hasCommandTimeout (client: Client): boolean {
  const timeout = isCluster(client) ? client.options.redisOptions?.commandTimeout : client.options.commandTimeout
  return typeof timeout === 'number' && timeout > 0
}
