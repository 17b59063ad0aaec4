// Captures a Fastify app's pino log lines (as parsed JSON) for tests that check what gets logged.
import { Writable } from 'node:stream'

export interface LogCapture {
  stream: Writable
  /** Every line logged so far, parsed. */
  lines: () => Array<Record<string, any>>
  /** Everything logged so far, raw. */
  text: () => string
}

export function captureLogs (): LogCapture {
  let text = ''
  const stream = new Writable({
    write (chunk, _encoding, callback) {
      text += String(chunk)
      callback()
    }
  })
  return {
    stream,
    lines: () => text.split('\n').filter(l => l !== '').map(l => JSON.parse(l)),
    text: () => text
  }
}
