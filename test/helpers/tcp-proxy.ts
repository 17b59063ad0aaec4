// A TCP proxy on loopback that can be partitioned: while partitioned it stops forwarding in both
// directions and holds the bytes (the sockets stay open, nothing is reset), as a network path that
// silently drops traffic would. New connections are accepted and held too. heal() lets it all through.
import net from 'node:net'

export interface TcpProxy {
  url: string
  port: number
  partitioned: boolean
  partition: () => void
  heal: () => void
  close: () => Promise<void>
}

export async function startTcpProxy (target: { host?: string, port: number }): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>()
  let partitioned = false

  const server = net.createServer(client => {
    const upstream = net.connect(target.port, target.host ?? '127.0.0.1')
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('close', () => sockets.delete(s))
      s.on('error', () => { client.destroy(); upstream.destroy() })
      if (partitioned) s.pause()
    }
    client.on('data', d => upstream.write(d))
    upstream.on('data', d => client.write(d))
    client.on('end', () => upstream.end())
    upstream.on('end', () => client.end())
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port

  const proxy: TcpProxy = {
    url: `redis://127.0.0.1:${port}`,
    port,
    get partitioned () { return partitioned },
    partition () {
      partitioned = true
      for (const s of sockets) s.pause()
    },
    heal () {
      partitioned = false
      for (const s of sockets) s.resume()
    },
    async close () {
      for (const s of sockets) s.destroy()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
  return proxy
}
