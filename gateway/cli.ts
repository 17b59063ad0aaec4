// `tokengate keygen` and `tokengate hash-password`.
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { createInterface } from 'node:readline'
import { hashPassword } from './passwords.js'

/** A 64-byte hex secret (as `openssl rand -hex 64`), or with eddsa an Ed25519 key pair for tokens.keys. */
export function keygen (opts: { eddsa?: boolean, kid?: string } = {}): string {
  if (opts.eddsa === true) {
    const kid = opts.kid ?? `ed-${new Date().toISOString().slice(0, 10)}-${randomBytes(3).toString('hex')}`
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
export async function hashPasswordCommand (given: string | undefined): Promise<string> {
  const password = given ?? await readLine()
  if (password === '') throw new Error('hash-password: give a password as an argument or on standard input')
  return await hashPassword(password)
}
