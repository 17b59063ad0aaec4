// Hand-made tokens for hostile and expiry tests, signed outside tokengate.
import { createHash } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import { SECRET } from './app.js'

export interface CraftOptions {
  key?: string
  algorithm?: 'HS256' | 'HS384' | 'HS512' | 'none'
  typ?: string
  /** Seconds from now; negative for an expired token. */
  expiresInSec?: number
  iss?: string
  aud?: string
}

/** Signs an access-token-shaped JWT: claims sub, sid, jti, iat, exp, auth_time, roles plus `claims`. */
export function craftAccessToken (claims: Record<string, unknown>, o: CraftOptions = {}): string {
  const now = Math.floor(Date.now() / 1000)
  const exp = now + (o.expiresInSec ?? 600)
  const payload = { jti: 'crafted', iat: Math.min(now, exp - 1), auth_time: now, roles: [], exp, ...claims }
  const sign = createSigner({
    key: o.algorithm === 'none' ? undefined : (o.key ?? SECRET),
    algorithm: o.algorithm ?? 'HS256',
    typ: o.typ ?? 'at+jwt',
    ...(o.iss !== undefined ? { iss: o.iss } : {}),
    ...(o.aud !== undefined ? { aud: o.aud } : {})
  } as never)
  return sign(payload)
}

/** Base64url JSON helpers for tampering with a token's parts. */
export const b64json = (part: string): Record<string, unknown> => JSON.parse(Buffer.from(part, 'base64url').toString('utf8'))
export const toB64json = (obj: unknown): string => Buffer.from(JSON.stringify(obj)).toString('base64url')

export interface RefreshParts { userId: string, sessionId: string, refreshId: string, parentHash: string | null, expiresAt: number }

/** Splits a refresh token `tgr2.<b64url userId>.<sessionId>.<refreshId>.<parent hash | ->.<expiry base36>.<mac>`. */
export function refreshParts (token: string): RefreshParts {
  const p = token.split('.')
  if (p.length !== 7 || p[0] !== 'tgr2') throw new Error(`not a refresh token: ${token.slice(0, 12)}…`)
  return { userId: Buffer.from(p[1], 'base64url').toString('utf8'), sessionId: p[2], refreshId: p[3], parentHash: p[4] === '-' ? null : p[4], expiresAt: parseInt(p[5], 36) }
}

/** What the store keeps for a refresh token's id: the first 22 base64url characters of its SHA-256. */
export const hashOf = (token: string): string => createHash('sha256').update(refreshParts(token).refreshId).digest('base64url').slice(0, 22)
