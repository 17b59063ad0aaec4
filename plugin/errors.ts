// Every error tokengate answers with, in one table. Messages never carry a token or a secret; no stack
// traces are captured (they are expected outcomes, and cheaper without).
import createError, { type FastifyError } from '@fastify/error'

export const TokenMissingError = createError('TOKENGATE_TOKEN_MISSING', 'Authentication required: no access token was presented', 401, Error, false)
export const TokenInvalidError = createError('TOKENGATE_TOKEN_INVALID', 'The access token is invalid', 401, Error, false)
export const TokenExpiredError = createError('TOKENGATE_TOKEN_EXPIRED', 'The access token has expired', 401, Error, false)
export const TokenRevokedError = createError('TOKENGATE_TOKEN_REVOKED', 'The access token has been revoked', 401, Error, false)
export const RefreshInvalidError = createError('TOKENGATE_REFRESH_INVALID', 'The refresh token is invalid', 401, Error, false)
export const RefreshExpiredError = createError('TOKENGATE_REFRESH_EXPIRED', 'The refresh token has expired', 401, Error, false)
export const RefreshReusedError = createError('TOKENGATE_REFRESH_REUSED', 'The refresh token was already used; the session has been revoked', 401, Error, false)
export const DpopInvalidError = createError('TOKENGATE_DPOP_INVALID', 'Invalid DPoP proof: %s', 401, Error, false)
export const DpopNonceError = createError('TOKENGATE_DPOP_NONCE', 'The DPoP proof must carry the server nonce given in DPoP-Nonce', 401, Error, false)
export const BadCredentialsError = createError('TOKENGATE_BAD_CREDENTIALS', 'Invalid credentials', 401, Error, false)
export const BadRequestError = createError('TOKENGATE_BAD_REQUEST', 'Bad request: %s', 400, Error, false)
/** A route's maxAge or acr (RFC 9470) not met by the token's authentication: carries what the route requires, for the challenge. */
export const StepUpRequiredError = createError('TOKENGATE_STEP_UP_REQUIRED', 'Step-up authentication required: %s', 401, Error, false)
export const ForbiddenError = createError('TOKENGATE_FORBIDDEN', 'Insufficient role for this resource', 403, Error, false)
export const CsrfError = createError('TOKENGATE_CSRF', 'Missing or mismatched x-csrf-token header for a cookie-authenticated request', 403, Error, false)
export const SessionNotFoundError = createError('TOKENGATE_SESSION_NOT_FOUND', 'Session not found', 404, Error, false)
export const RateLimitedError = createError('TOKENGATE_RATE_LIMITED', 'Too many requests, retry later', 429, Error, false)
export const StoreUnavailableError = createError('TOKENGATE_STORE_UNAVAILABLE', 'The session store is unavailable', 503, Error, false)
export const UpstreamUnavailableError = createError('TOKENGATE_UPSTREAM_UNAVAILABLE', 'The upstream service is unavailable', 502, Error, false)
export const OidcFailedError = createError('TOKENGATE_OIDC_FAILED', 'Single sign-on failed: %s', 401, Error, false)
export const UpstreamTimeoutError = createError('TOKENGATE_UPSTREAM_TIMEOUT', 'The upstream service did not answer in time', 504, Error, false)

export type TokengateError = FastifyError & { code: string, statusCode: number }

/** Codes of the 401 errors that mean "a token was presented but cannot be used" (RFC 6750 invalid_token). */
export const INVALID_TOKEN_CODES: ReadonlySet<string> = new Set([
  'TOKENGATE_TOKEN_INVALID',
  'TOKENGATE_TOKEN_EXPIRED',
  'TOKENGATE_TOKEN_REVOKED',
  'TOKENGATE_REFRESH_INVALID',
  'TOKENGATE_REFRESH_EXPIRED',
  'TOKENGATE_REFRESH_REUSED'
])

/** Whether an error is one of tokengate's own (an expected outcome with a TOKENGATE_ code). */
export function isTokengateError (err: unknown): err is TokengateError {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && code.startsWith('TOKENGATE_')
}
