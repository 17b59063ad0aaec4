// A real OpenID Provider for tests: panva's oidc-provider on 127.0.0.1 (its development login and consent
// pages, back-channel logout on), and a small "browser" that drives it over HTTP: a cookie jar shared by every
// port of 127.0.0.1 (as a browser's is), redirects followed by hand, the provider's forms filled and posted.
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { exportJWK, generateKeyPair, type JWK } from 'jose'
import Provider, { type ClientMetadata, type Configuration } from 'oidc-provider'
import { freePort } from './redis.js'

export interface TestProvider {
  issuer: string
  provider: Provider
  /** The signing key (private JWK, with kid and alg): a test may sign what the provider would. */
  signingKey: JWK
  /** Back-channel logout calls the provider made: 'success' or the error, per client. */
  backchannel: Array<{ clientId: string, sub: string, sid: string, error?: string }>
  close: () => Promise<void>
}

/** Roles in the ID token's realm_access.roles (as Keycloak puts them): an account named admin-… is also an admin. */
export const rolesOf = (account: string): string[] => account.startsWith('admin-') ? ['user', 'admin'] : ['user']

/**
 * How an account authenticated at the provider (the ID token's acr and amr, RFC 9470): an account named mfa-… used
 * a second factor; any other, none (the provider then puts neither claim in the ID token).
 */
export const authOf = (account: string): { acr: string, amr: string[] } | undefined =>
  account.startsWith('mfa-') ? { acr: 'mfa', amr: ['pwd', 'otp'] } : undefined

export async function startProvider (clients: ClientMetadata[], extra: Partial<Configuration> = {}): Promise<TestProvider> {
  const port = await freePort()
  const issuer = `http://127.0.0.1:${port}`
  const { privateKey } = await generateKeyPair('RS256', { extractable: true })
  const signingKey = { ...await exportJWK(privateKey), kid: 'op-key-1', alg: 'RS256', use: 'sig' }
  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [signingKey] },
    cookies: { keys: ['test-provider-cookie-key-0123456789'] },
    features: {
      devInteractions: { enabled: true },
      backchannelLogout: { enabled: true },
      rpInitiatedLogout: { enabled: true }
    },
    // Its back-channel calls go to the gateway on 127.0.0.1: past the SSRF guard it puts on outgoing requests
    // (its dispatcher refuses special-use addresses such as loopback).
    fetch: async (url, options) => {
      const { dispatcher: _guard, ...rest } = (options ?? {}) as RequestInit & { dispatcher?: unknown }
      return await fetch(url, rest)
    },
    // Profile claims in the ID token (a code flow would otherwise put them at the userinfo endpoint only).
    conformIdTokenClaims: false,
    // acr and amr in every ID token, as Keycloak puts them (this provider leaves acr out when it names no acr values).
    acrValues: ['mfa'],
    claims: { openid: ['sub', 'acr', 'amr'], profile: ['name', 'realm_access'], email: ['email'] },
    async findAccount (_ctx, id) {
      return {
        accountId: id,
        claims: async () => ({ sub: id, name: id, email: `${id}@example.test`, realm_access: { roles: rolesOf(id) } })
      }
    },
    ...extra
  })
  // Its development login page records the account only: the login result gets the account's acr and amr here,
  // as a provider's own login would set them.
  const finished = provider.interactionFinished.bind(provider)
  provider.interactionFinished = async (req, res, result, options) => {
    const login = (result as { login?: { accountId: string } }).login
    const how = login === undefined ? undefined : authOf(login.accountId)
    if (login !== undefined && how !== undefined) Object.assign(login, how)
    await finished(req, res, result, options)
  }
  const backchannel: TestProvider['backchannel'] = []
  provider.on('backchannel.success', (_ctx, client, sub, sid) => { backchannel.push({ clientId: client.clientId, sub, sid }) })
  provider.on('backchannel.error', (_ctx, err, client, sub, sid) => { backchannel.push({ clientId: client.clientId, sub, sid, error: String(err.message) }) })
  const server = http.createServer(provider.callback())
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', resolve)
  })
  return {
    issuer,
    provider,
    signingKey,
    backchannel,
    close: async () => {
      server.closeAllConnections()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}

/** The address of a server listening on 127.0.0.1. */
export const originOf = (server: http.Server): string => `http://127.0.0.1:${(server.address() as AddressInfo).port}`

interface Cookie { name: string, value: string, path: string, attributes: string }

/** A browser's cookie jar for 127.0.0.1 (cookies do not tell ports apart), with Path matching. */
export class Jar {
  readonly cookies = new Map<string, Cookie>()

  store (res: Response): void {
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';')
      const eq = pair.indexOf('=')
      const name = pair.slice(0, eq).trim()
      const value = pair.slice(eq + 1).trim()
      const path = attrs.map(a => a.trim()).find(a => /^path=/i.test(a))?.slice(5) ?? '/'
      const maxAge = attrs.map(a => a.trim()).find(a => /^max-age=/i.test(a))
      const expires = attrs.map(a => a.trim()).find(a => /^expires=/i.test(a))
      const gone = value === '' || (maxAge !== undefined && Number(maxAge.slice(8)) <= 0) || (expires !== undefined && Date.parse(expires.slice(8)) <= Date.now())
      const key = `${name}\0${path}`
      if (gone) this.cookies.delete(key)
      else this.cookies.set(key, { name, value, path, attributes: attrs.join(';') })
    }
  }

  header (url: URL): string {
    return [...this.cookies.values()]
      .filter(c => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map(c => `${c.name}=${c.value}`).join('; ')
  }

  get (name: string): Cookie | undefined {
    return [...this.cookies.values()].find(c => c.name === name)
  }

  clone (): Jar {
    const j = new Jar()
    for (const [k, c] of this.cookies) j.cookies.set(k, { ...c })
    return j
  }
}

/** One request as a browser sends it: the jar's cookies, no redirect followed; the answer's cookies kept. */
export async function go (jar: Jar, url: string | URL, init: { method?: string, form?: Record<string, string>, headers?: Record<string, string> } = {}): Promise<Response> {
  const u = new URL(url)
  const headers: Record<string, string> = { ...init.headers }
  const cookie = jar.header(u)
  if (cookie !== '') headers.cookie = cookie
  if (init.form !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded'
  const res = await fetch(u, { method: init.method ?? (init.form !== undefined ? 'POST' : 'GET'), headers, redirect: 'manual', body: init.form !== undefined ? new URLSearchParams(init.form).toString() : undefined })
  jar.store(res)
  return res
}

/** The form of a provider page: its action and its hidden fields (and the named submit button, when asked). */
export function formOf (html: string, base: string, button?: string): { action: string, fields: Record<string, string> } {
  const form = /<form\b[^>]*\baction="([^"]+)"[^>]*>([\s\S]*?)<\/form>/i.exec(html)
  if (form === null) throw new Error(`no form on the page: ${html.slice(0, 300)}`)
  const fields: Record<string, string> = {}
  for (const m of form[2].matchAll(/<input\b[^>]*\btype="hidden"[^>]*>/gi)) {
    const name = /\bname="([^"]*)"/.exec(m[0])?.[1]
    const value = /\bvalue="([^"]*)"/.exec(m[0])?.[1] ?? ''
    if (name !== undefined) fields[name] = value.replace(/&amp;/g, '&').replace(/&quot;/g, '"')
  }
  if (button !== undefined) {
    const b = new RegExp(`<button\\b[^>]*\\bname="${button}"[^>]*>`, 'i').exec(html)
    if (b !== null) fields[button] = /\bvalue="([^"]*)"/.exec(b[0])?.[1] ?? ''
  }
  return { action: new URL(form[1].replace(/&amp;/g, '&'), base).href, fields }
}

/**
 * Signs in at the provider from its authorization URL: follows its redirects, fills its login page (as
 * `account`, any password) and its consent page, until it redirects to `until` (the gateway's origin). Resolves
 * to that redirect's URL (the callback with code, state and iss). `cancel`: the user aborts at the login page.
 */
export async function signInAtProvider (jar: Jar, authorizationUrl: string, account: string, until: string, opts: { cancel?: boolean } = {}): Promise<URL> {
  let url = new URL(authorizationUrl)
  let res = await go(jar, url)
  for (let step = 0; step < 20; step++) {
    if (res.status >= 300 && res.status < 400) {
      const next = new URL(res.headers.get('location')!, url)
      if (next.origin === new URL(until).origin) return next
      url = next
      res = await go(jar, url)
      continue
    }
    const html = await res.text()
    if (res.status !== 200) throw new Error(`the provider answered ${res.status} at ${url.pathname}: ${html.slice(0, 500)}`)
    if (opts.cancel === true && /name="login"/.test(html)) {
      const abort = /href="([^"]*\/abort)"/.exec(html)
      if (abort === null) throw new Error('no cancel link on the login page')
      url = new URL(abort[1], url)
      res = await go(jar, url)
      continue
    }
    const { action, fields } = formOf(html, url.href)
    if (/name="login"/.test(html)) Object.assign(fields, { login: account, password: 'any password' })
    url = new URL(action)
    res = await go(jar, url, { form: fields })
  }
  throw new Error('too many steps at the provider')
}

/** Signs out at the provider's own end-session page ("Yes, sign me out"): it calls the back-channel logout URIs. */
export async function signOutAtProvider (jar: Jar, issuer: string): Promise<void> {
  const page = await go(jar, `${issuer}/session/end`)
  const html = await page.text()
  if (page.status !== 200) throw new Error(`end session page: ${page.status} ${html.slice(0, 300)}`)
  const { action, fields } = formOf(html, `${issuer}/session/end`, 'logout')
  const res = await go(jar, action, { form: fields })
  if (res.status !== 303 && res.status !== 302) throw new Error(`end session confirm: ${res.status} ${(await res.text()).slice(0, 300)}`)
}
