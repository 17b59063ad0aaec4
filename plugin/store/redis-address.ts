// Where a Redis client points, for messages: host:port (the nodes of a Cluster, the sentinels and master name
// of a Sentinel group), never a password; and ioredis's connection failures said in tokengate's words.
import { Cluster, type Redis } from 'ioredis'

const hostPort = (host: string | undefined, port: number | string | undefined): string => {
  const h = host ?? 'localhost'
  return `${h.includes(':') ? `[${h}]` : h}:${port ?? 6379}`
}

/** A Cluster startup node as given (a URL, a port, or { host, port }) → host:port (a URL's password dropped). */
function nodeAddress (node: unknown): string {
  if (typeof node === 'number') return hostPort(undefined, node)
  if (typeof node === 'string') {
    if (/^\d+$/.test(node)) return hostPort(undefined, node)
    try {
      const url = new URL(node.includes('://') ? node : `redis://${node}`)
      return hostPort(url.hostname.replace(/^\[|\]$/g, ''), url.port === '' ? undefined : url.port)
    } catch {
      return '(an unreadable address)'
    }
  }
  const n = node as { host?: string, port?: number } | null
  return hostPort(n?.host, n?.port)
}

/** "Redis at 127.0.0.1:6379", "Redis Cluster at h1:7000, h2:7000", "Redis master "m" of the sentinels at s1:26379". */
export function redisAddress (client: Redis | Cluster): string {
  if (client instanceof Cluster) {
    const nodes = (client as unknown as { startupNodes?: unknown[] }).startupNodes ?? []
    return `Redis Cluster at ${nodes.map(nodeAddress).join(', ')}`
  }
  const o = client.options
  if (Array.isArray(o.sentinels) && o.sentinels.length > 0) {
    return `Redis master "${o.name ?? 'mymaster'}" of the sentinels at ${o.sentinels.map(s => hostPort(s.host, s.port)).join(', ')}`
  }
  if (typeof o.path === 'string' && o.path !== '') return `Redis at ${o.path}`
  return `Redis at ${hostPort(o.host, o.port)}`
}

/**
 * What a failed call on `client` means when it is the connection's fault, in tokengate's words
 * ("Redis at host:port is not reachable"); undefined for any other error (a Redis error reply, a script's).
 */
export function connectionProblem (client: Redis | Cluster, err: unknown): string | undefined {
  const message = err instanceof Error ? err.message : ''
  const code = (err as { code?: unknown } | null)?.code
  if (/Command timed out|did not answer within/i.test(message)) return `${redisAddress(client)} did not answer in time`
  if (client.status !== 'ready' || /Stream isn't writeable|Connection is closed|enableOfflineQueue/i.test(message) ||
      (typeof code === 'string' && /^(ECONNREFUSED|ECONNRESET|ENOTFOUND|ETIMEDOUT|EHOSTUNREACH|EPIPE)$/.test(code))) {
    return `${redisAddress(client)} is not reachable`
  }
  return undefined
}
