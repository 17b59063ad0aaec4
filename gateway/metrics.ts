// Prometheus metrics for one gateway instance (its own registry, so several gateways in one process
// — tests, benchmarks — do not collide).
import type { FastifyInstance } from 'fastify'
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export interface Metrics {
  registry: Registry
  logins: Counter<'result'>
  refreshes: Counter<'result'>
  reuseDetections: Counter
  revocations: Counter<'reason'>
  authFailures: Counter<'code'>
}

export function createMetrics (): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry, prefix: 'tokengate_process_' })
  return {
    registry,
    logins: new Counter({ name: 'tokengate_logins_total', help: 'Login attempts by result', labelNames: ['result'], registers: [registry] }),
    refreshes: new Counter({ name: 'tokengate_refreshes_total', help: 'Token refreshes (route and hook) by result', labelNames: ['result'], registers: [registry] }),
    reuseDetections: new Counter({ name: 'tokengate_reuse_detections_total', help: 'Refresh token reuse detections (each revokes a session)', registers: [registry] }),
    revocations: new Counter({ name: 'tokengate_revocations_total', help: 'Sessions revoked, by reason', labelNames: ['reason'], registers: [registry] }),
    authFailures: new Counter({ name: 'tokengate_auth_failures_total', help: 'Requests refused by tokengate, by error code', labelNames: ['code'], registers: [registry] })
  }
}

/** Counts every request by route and status, with a latency histogram; serves GET /metrics. */
export function instrument (app: FastifyInstance, metrics: Metrics): void {
  const requests = new Counter({ name: 'tokengate_http_requests_total', help: 'HTTP requests by route, method and status', labelNames: ['route', 'method', 'status'], registers: [metrics.registry] })
  const latency = new Histogram({
    name: 'tokengate_http_request_duration_seconds',
    help: 'HTTP request latency by route',
    labelNames: ['route', 'method'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [metrics.registry]
  })
  // Labelled children, looked up once per (route, method, status): prom-client's label hashing per
  // request costs more than the counting.
  const children = new Map<string, { count: ReturnType<typeof requests.labels>, time: ReturnType<typeof latency.labels> }>()
  app.addHook('onResponse', (request, reply, done) => {
    // The route pattern, never the raw URL: bounded label cardinality and no ids or tokens in labels.
    const route = request.routeOptions.url ?? 'unmatched'
    const key = `${request.method} ${reply.statusCode} ${route}`
    let c = children.get(key)
    if (c === undefined) {
      c = { count: requests.labels(route, request.method, String(reply.statusCode)), time: latency.labels(route, request.method) }
      children.set(key, c)
    }
    c.count.inc()
    c.time.observe(reply.elapsedTime / 1000)
    done()
  })
  app.addHook('onError', (_request, _reply, error, done) => {
    const code = (error as { code?: unknown }).code
    if (typeof code === 'string' && code.startsWith('TOKENGATE_')) {
      metrics.authFailures.inc({ code })
      if (code.startsWith('TOKENGATE_REFRESH_')) metrics.refreshes.inc({ result: 'failure' })
    }
    done()
  })
  app.get('/metrics', { logLevel: 'warn' }, async (_request, reply) => {
    reply.header('content-type', metrics.registry.contentType)
    return await metrics.registry.metrics()
  })
}
