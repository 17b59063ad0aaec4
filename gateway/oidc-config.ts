// Checks of login.oidc beyond its schema (the schema is in config.ts). Throws ConfigError naming the field.
import { isIP } from 'node:net'
import { ConfigError } from './config-error.js'

export interface OidcConfig {
  issuer: string
  clientId: string
  clientSecret?: string
  scopes: string[]
  rolesClaim?: string
  publicUrl: string
}

/** Whether a URL's host is this machine (127.0.0.0/8, ::1, localhost): plain http is allowed there only. */
export function loopbackHost (url: URL): boolean {
  const host = url.hostname.replace(/^\[|\]$/g, '')
  if (host === 'localhost' || host.endsWith('.localhost')) return true
  if (isIP(host) === 4) return host.startsWith('127.')
  return host === '::1'
}

/**
 * login.oidc: `issuer` an https URL (http on loopback only: discovery, keys and tokens come from it), without
 * query or fragment; `publicUrl` an origin (a trailing slash is dropped); `scopes` with "openid"; and the
 * tokens' `transport` must hold "cookie": the session single sign-on starts lives in the tg_* cookies.
 */
export function checkOidcConfig (oidc: OidcConfig, transport: readonly string[]): void {
  let issuer: URL
  try {
    issuer = new URL(oidc.issuer)
  } catch {
    throw new ConfigError('login.oidc.issuer', 'is not a URL')
  }
  if (issuer.search !== '' || issuer.hash !== '' || oidc.issuer.includes('?') || oidc.issuer.includes('#')) {
    throw new ConfigError('login.oidc.issuer', 'must be the provider\'s issuer identifier, without query or fragment (e.g. "https://accounts.google.com")')
  }
  if (issuer.pathname.includes('/.well-known/')) {
    throw new ConfigError('login.oidc.issuer', 'must be the issuer identifier itself, not its discovery document (drop "/.well-known/…"): the gateway discovers the rest and checks the issuer it names')
  }
  if (issuer.protocol !== 'https:' && !loopbackHost(issuer)) {
    throw new ConfigError('login.oidc.issuer', 'must be an https URL (plain http only for a provider on this machine: 127.0.0.1, ::1, localhost)')
  }
  let pub: URL
  try {
    pub = new URL(oidc.publicUrl)
  } catch {
    throw new ConfigError('login.oidc.publicUrl', 'is not a URL')
  }
  if (pub.pathname !== '/' || pub.search !== '' || pub.hash !== '' || /[?#]/.test(oidc.publicUrl) || pub.username !== '' || pub.password !== '') {
    throw new ConfigError('login.oidc.publicUrl', 'must be the gateway\'s external origin, scheme://host[:port] without a path (e.g. "https://gateway.example")')
  }
  oidc.publicUrl = pub.origin
  if (!oidc.scopes.includes('openid')) throw new ConfigError('login.oidc.scopes', 'must include "openid"')
  if (!transport.includes('cookie')) {
    throw new ConfigError('tokens.transport', 'must include "cookie" with login.oidc: single sign-on ends in a browser redirect, and the session it starts travels in the tg_* cookies (e.g. ["header", "cookie"])')
  }
}
