// `tokengate keygen` and `tokengate hash-password`.
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { hashPassword } from './login.js'

/** A 64-byte hex secret (as `openssl rand -hex 64`), or with --eddsa an Ed25519 key pair for tokens.keys. */
export function keygen (args: string[]): string {
  if (args.includes('--eddsa')) {
    const kidAt = args.indexOf('--kid')
    const kid = kidAt >= 0 && args[kidAt + 1] !== undefined ? args[kidAt + 1] : `ed-${new Date().toISOString().slice(0, 10)}-${randomBytes(3).toString('hex')}`
    const { privateKey, publicKey } = generateKeyPairSync('ed25519')
    return JSON.stringify({
      kid,
      algorithm: 'EdDSA',
      privateKey: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
      publicKey: publicKey.export({ format: 'pem', type: 'spki' }).toString()
    }, null, 2)
  }
  return randomBytes(64).toString('hex')
}

async function readLine (): Promise<string> {
  const rl = createInterface({ input: process.stdin, terminal: false })
  const first = await new Promise<string>(resolve => {
    rl.once('line', resolve)
    rl.once('close', () => resolve(''))
  })
  rl.close()
  return first
}

/** Hashes the password given as an argument, or the first line of standard input. */
export async function hashPasswordCommand (args: string[]): Promise<string> {
  const password = args[0] ?? await readLine()
  if (password === '') throw new Error('hash-password: give a password as an argument or on standard input')
  return await hashPassword(password)
}
