// Prometheus metrics for one gateway instance (its own registry, so several gateways in one process
// — tests, benchmarks — do not collide).
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { FastifyInstance, FastifyReply, FastifyRequest, HookHandlerDoneFunction } from 'fastify'
import { Counter, Registry, collectDefaultMetrics } from 'prom-client'
import { addRouteHook } from '../plugin/index.js'

export interface Metrics {
  registry: Registry
  logins: Counter<'result'>
  refreshes: Counter<'result'>
  reuseDetections: Counter
  revocations: Counter<'reason'>
  authFailures: Counter<'code'>
  upstreamFailures: Counter<'code'>
}

export function createMetrics (): Metrics {
  const registry = new Registry()
  // prom-client names them process_* and nodejs_*: one tokengate_ prefix in front.
  collectDefaultMetrics({ register: registry, prefix: 'tokengate_' })
  return {
    registry,
    logins: new Counter({ name: 'tokengate_logins_total', help: 'Login attempts by result', labelNames: ['result'], registers: [registry] }),
    refreshes: new Counter({ name: 'tokengate_refreshes_total', help: 'Token refreshes (route and hook) by result', labelNames: ['result'], registers: [registry] }),
    reuseDetections: new Counter({ name: 'tokengate_reuse_detections_total', help: 'Refresh token reuse detections (each revokes a session)', registers: [registry] }),
    revocations: new Counter({ name: 'tokengate_revocations_total', help: 'Sessions revoked, by reason', labelNames: ['reason'], registers: [registry] }),
    authFailures: new Counter({ name: 'tokengate_auth_failures_total', help: 'Requests refused by tokengate, by error code', labelNames: ['code'], registers: [registry] }),
    upstreamFailures: new Counter({ name: 'tokengate_upstream_failures_total', help: 'Upstream (and identity service) failures answered 502 or 504, by error code', labelNames: ['code'], registers: [registry] })
  }
}

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

interface Series {
  route: string
  method: string
  statuses: Map<number, number>
  /** Per-bucket (not cumulative) counts; the last slot is +Inf. */
  buckets: Float64Array
  sum: number
  count: number
}

/** Counts one request of a route and writes its access-log line: (request, status, seconds). */
export type Recorder = (request: FastifyRequest, status: number, seconds: number) => void

/**
 * Counts every request by route, method and status, with a latency histogram, and serves GET /metrics.
 * Each route holds its own series, so a request costs a few additions: no label hashing (prom-client's
 * per-observation cost) and no request.routeOptions (built per access). The gateway's own routes record
 * in an onResponse hook of their own; proxied routes (config.proxied) record when the upstream's answer
 * arrives and, on errors, in onError, with no hook at all on their success path. The numbers become
 * prom-client metrics when scraped.
 */
export function instrument (app: FastifyInstance, metrics: Metrics): { recorder: (route: string) => Recorder } {
  const all: Series[] = []
  function recorder (route: string): Recorder {
    const byMethod = new Map<string, Series>()
    return function record (request, status, seconds) {
      const method = request.method
      // The one access-log line of the request (Fastify's own two are off): a no-op above info.
      request.log.info({ method, route, status, ms: Math.round(seconds * 100_000) / 100 }, 'request')
      let s = byMethod.get(method)
      if (s === undefined) {
        s = { route, method, statuses: new Map(), buckets: new Float64Array(BUCKETS.length + 1), sum: 0, count: 0 }
        byMethod.set(method, s)
        all.push(s)
      }
      s.statuses.set(status, (s.statuses.get(status) ?? 0) + 1)
      let i = 0
      while (i < BUCKETS.length && seconds > BUCKETS[i]) i++
      s.buckets[i]++
      s.sum += seconds
      s.count++
    }
  }
  // The route pattern, never the raw URL: bounded label cardinality and no ids or tokens in labels.
  app.addHook('onRoute', (route) => {
    if ((route.config as { proxied?: unknown } | undefined)?.proxied !== undefined) return
    const record = recorder(route.url ?? route.path)
    const hook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction): void => {
      record(request, reply.statusCode, reply.elapsedTime / 1000)
      done()
    }
    addRouteHook(route, 'onResponse', hook, 'last')
  })
  // The not-found handler takes no onResponse hook: its requests are counted as it answers.
  const unmatched = recorder('unmatched')
  app.setNotFoundHandler(async (request, reply) => {
    reply.code(404)
    unmatched(request, 404, reply.elapsedTime / 1000)
    // Fastify's own 404 body, with its code; the path without the query (which may carry anything).
    const q = request.url.indexOf('?')
    return { statusCode: 404, code: 'FST_ERR_NOT_FOUND', error: 'Not Found', message: `Route ${request.method}:${(q < 0 ? request.url : request.url.slice(0, q)).slice(0, 256)} not found` }
  })

  metrics.registry.registerMetric({
    name: 'tokengate_http_requests_total',
    help: 'HTTP requests by route, method and status',
    type: 'counter',
    get: async () => ({
      name: 'tokengate_http_requests_total',
      help: 'HTTP requests by route, method and status',
      type: 'counter',
      aggregator: 'sum',
      values: all.flatMap(s => [...s.statuses].map(([status, value]) => ({ labels: { route: s.route, method: s.method, status: String(status) }, value })))
    })
  } as never)
  metrics.registry.registerMetric({
    name: 'tokengate_http_request_duration_seconds',
    help: 'HTTP request latency by route',
    type: 'histogram',
    get: async () => ({
      name: 'tokengate_http_request_duration_seconds',
      help: 'HTTP request latency by route',
      type: 'histogram',
      aggregator: 'sum',
      values: all.flatMap(s => {
        const labels = { route: s.route, method: s.method }
        let cumulative = 0
        const out = BUCKETS.map((le, i) => {
          cumulative += s.buckets[i]
          return { labels: { ...labels, le }, value: cumulative, metricName: 'tokengate_http_request_duration_seconds_bucket' }
        })
        out.push({ labels: { ...labels, le: '+Inf' as never }, value: s.count, metricName: 'tokengate_http_request_duration_seconds_bucket' })
        return [
          ...out,
          { labels, value: s.sum, metricName: 'tokengate_http_request_duration_seconds_sum' } as never,
          { labels, value: s.count, metricName: 'tokengate_http_request_duration_seconds_count' } as never
        ]
      })
    })
  } as never)

  app.addHook('onError', (request, reply, error, done) => {
    const proxied = (request.routeOptions.config as { proxied?: Recorder } | undefined)?.proxied
    if (typeof proxied === 'function') {
      const status = (error as { statusCode?: number }).statusCode
      proxied(request, status !== undefined && status >= 400 && status < 600 ? status : 500, reply.elapsedTime / 1000)
    }
    const code = (error as { code?: unknown }).code
    if (code === 'TOKENGATE_UPSTREAM_UNAVAILABLE' || code === 'TOKENGATE_UPSTREAM_TIMEOUT') {
      metrics.upstreamFailures.inc({ code })
    } else if (typeof code === 'string' && code.startsWith('TOKENGATE_')) {
      metrics.authFailures.inc({ code })
      if (code.startsWith('TOKENGATE_REFRESH_')) metrics.refreshes.inc({ result: 'failure' })
    }
    done()
  })
  return { recorder }
}

/** Where GET /metrics is served: the public port (default), a listener of its own, or nowhere. */
export type MetricsPlacement = false | { listen?: { host: string, port: number } }

/** Serves GET /metrics where the config says; a listener of its own starts with the app and closes with it. */
export function serveMetrics (app: FastifyInstance, metrics: Metrics, placement: MetricsPlacement): void {
  if (placement === false) return
  const listen = placement.listen
  if (listen === undefined) {
    app.get('/metrics', { logLevel: 'warn' }, async (_request, reply) => {
      reply.header('content-type', metrics.registry.contentType)
      return await metrics.registry.metrics()
    })
    return
  }
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      metrics.registry.metrics().then(text => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType })
        res.end(text)
      }, () => { res.writeHead(500).end() })
      return
    }
    res.writeHead(404, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ statusCode: 404, code: 'FST_ERR_NOT_FOUND', error: 'Not Found', message: 'Only GET /metrics is served here' }))
  })
  // Bound when the app gets ready (a port already taken stops start-up, as the main port does).
  app.addHook('onReady', async () => {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(listen.port, listen.host, () => { server.off('error', reject); resolve() })
    })
    const a = server.address() as AddressInfo
    app.log.info(`metrics listening at http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}/metrics`)
  })
  app.addHook('onClose', async () => {
    if (!server.listening) return
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => resolve()))
  })
}
