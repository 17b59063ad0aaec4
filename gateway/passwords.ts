// Password hashes for the users file: scrypt, `scrypt$N$r$p$<salt b64>$<hash b64>` (node:crypto only, so the
// bin's hash-password command loads nothing else).
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from 'node:crypto'

// scrypt parameters for password hashes: N=2^15, r=8, p=1 (OWASP's minimum is 2^17 with p=1 for
// scrypt as a password hash at 64 MiB; 2^15 keeps a login near 50 ms on small machines).
export const SCRYPT = { N: 32768, r: 8, p: 1, keylen: 32 }
const maxmem = (o: { N: number, r: number }): number => 256 * o.N * o.r

const scrypt = async (password: string, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> =>
  await new Promise((resolve, reject) => scryptCb(password, salt, keylen, options, (err, key) => err !== null ? reject(err) : resolve(key)))

/** A hash for the users file: `scrypt$N$r$p$<salt b64>$<hash b64>`. */
export async function hashPassword (password: string): Promise<string> {
  const salt = randomBytes(16)
  const key = await scrypt(password, salt, SCRYPT.keylen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p, maxmem: maxmem(SCRYPT) })
  return `scrypt$${SCRYPT.N}$${SCRYPT.r}$${SCRYPT.p}$${salt.toString('base64')}$${key.toString('base64')}`
}

export interface ParsedHash { N: number, r: number, p: number, salt: Buffer, key: Buffer }

export function parseHash (hash: string): ParsedHash | null {
  const m = /^scrypt\$(\d+)\$(\d+)\$(\d+)\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/.exec(hash)
  if (m === null) return null
  const N = Number(m[1])
  if (N < 2 || (N & (N - 1)) !== 0) return null
  return { N, r: Number(m[2]), p: Number(m[3]), salt: Buffer.from(m[4], 'base64'), key: Buffer.from(m[5], 'base64') }
}

/** Checks a password against a hash in constant time. */
export async function verifyPassword (password: string, hash: string): Promise<boolean> {
  const h = parseHash(hash)
  if (h === null) return false
  const key = await scrypt(password, h.salt, h.key.length, { N: h.N, r: h.r, p: h.p, maxmem: maxmem(h) })
  return key.length === h.key.length && timingSafeEqual(key, h.key)
}
