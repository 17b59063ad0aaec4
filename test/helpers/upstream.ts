// An upstream on loopback that answers every request with what it received, as JSON.
import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface EchoUpstream { url: string, close: () => Promise<void> }

/** `delayMs` holds every answer that long (for timeouts). */
export async function startEchoUpstream (opts: { delayMs?: number } = {}): Promise<EchoUpstream> {
  const server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const answer = (): void => {
        res.setHeader('content-type', 'application/json')
        res.end(JSON.stringify({ method: req.method, url: req.url, headers: req.headers }))
      }
      if (opts.delayMs === undefined) answer()
      else setTimeout(answer, opts.delayMs).unref()
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: async () => { server.closeAllConnections(); await new Promise<void>(resolve => server.close(() => resolve())) }
  }
}
