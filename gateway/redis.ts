// The gateway's one Redis client, from `redis` in the config: a single server ({ url }), a Redis Cluster
// ({ cluster: [urls] }) or a Sentinel-managed master ({ sentinels: ['host:port'], name }). Password and TLS
// come from the URL (redis://:pw@host, rediss://) or from the password / tls fields. Every part of the
// gateway (sessions, the revocation feed, rate limits) uses this client.
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis'
import { closingClient, keepConnected, redisClientOptions } from '../plugin/index.js'
import { ConfigError } from './config-error.js'

export interface RedisConfig {
  url?: string
  cluster?: string[]
  sentinels?: string[]
  name?: string
  password?: string
  sentinelPassword?: string
  tls?: boolean
}

function hostPort (value: string, field: string): { host: string, port: number } {
  const m = /^\[?([^\]\s]+?)\]?:(\d{1,5})$/.exec(value)
  if (m === null) throw new ConfigError(field, `must be host:port, got ${JSON.stringify(value)}`)
  return { host: m[1], port: Number(m[2]) }
}

/** Checks that exactly one topology is named, with what it needs. Throws ConfigError naming the field. */
export function checkRedisConfig (c: RedisConfig): void {
  const given = (['url', 'cluster', 'sentinels'] as const).filter(k => c[k] !== undefined)
  if (given.length !== 1) throw new ConfigError('redis', `needs exactly one of "url", "cluster" or "sentinels"${given.length > 1 ? ` (got ${given.join(' and ')})` : ''}`)
  if (c.sentinels !== undefined) {
    if (c.name === undefined) throw new ConfigError('redis.name', 'is required with redis.sentinels (the master group name, e.g. "mymaster")')
    c.sentinels.forEach((s, i) => hostPort(s, `redis.sentinels[${i}]`))
  } else {
    if (c.name !== undefined) throw new ConfigError('redis.name', 'goes with redis.sentinels')
    if (c.sentinelPassword !== undefined) throw new ConfigError('redis.sentinelPassword', 'goes with redis.sentinels')
  }
}

/** One Redis client for the gateway, as tokengate opens its own: no offline queue, a command timeout, reconnect forever. */
export function createRedis (c: RedisConfig, timeoutMs: number): Redis | Cluster {
  const own = redisClientOptions(timeoutMs)
  const auth: RedisOptions = {
    ...(c.password !== undefined ? { password: c.password } : {}),
    ...(c.tls === true ? { tls: {} } : {})
  }
  let client: Redis | Cluster
  if (c.url !== undefined) {
    client = new Redis(c.url, { ...own, ...auth })
  } else if (c.cluster !== undefined) {
    const nodes = c.cluster.map(u => {
      const url = new URL(u)
      return { host: url.hostname.replace(/^\[|\]$/g, ''), port: Number(url.port || 6379) }
    })
    // A password or TLS given in the first node's URL applies to every node.
    const first = new URL(c.cluster[0])
    const fromUrl: RedisOptions = {
      ...(first.password !== '' ? { password: decodeURIComponent(first.password) } : {}),
      ...(first.username !== '' ? { username: decodeURIComponent(first.username) } : {}),
      ...(first.protocol === 'rediss:' ? { tls: {} } : {})
    }
    const options: ClusterOptions = {
      enableOfflineQueue: false,
      clusterRetryStrategy: (times: number) => Math.min(50 * times, 1000),
      redisOptions: { ...own, ...fromUrl, ...auth }
    }
    client = new Cluster(nodes, options)
  } else {
    client = new Redis({
      ...own,
      ...auth,
      sentinels: c.sentinels!.map((s, i) => hostPort(s, `redis.sentinels[${i}]`)),
      name: c.name!,
      ...(c.sentinelPassword !== undefined ? { sentinelPassword: c.sentinelPassword } : {}),
      ...(c.tls === true ? { enableTLSForSentinelMode: true } : {}),
      // Learn of a failover from the sentinels' +switch-master, not only when the old master's connection drops.
      failoverDetector: true,
      sentinelRetryStrategy: (times: number) => Math.min(50 * times, 1000),
      // A sentinel that accepts the connection and never answers would otherwise hold a reconnect forever.
      sentinelCommandTimeout: Math.max(timeoutMs, 1000)
    })
    // A failover heard while asking a sentinel for the master can end the client for good (keepConnected).
    keepConnected(client)
  }
  client.on('error', () => { /* readiness and 503s report it; reconnects by itself */ })
  return client
}

/** QUIT, then disconnect() in any case: with Sentinel only disconnect() also ends ioredis's connections to the sentinels. */
export async function closeRedis (client: Redis | Cluster): Promise<void> {
  closingClient(client)
  try { await client.quit() } catch { /* disconnected below */ }
  client.disconnect()
}
