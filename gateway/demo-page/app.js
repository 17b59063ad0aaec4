// The demo page's script. A password login goes through tokengate/client, served by the demo at
// /demo/client.js exactly as the package ships it (dist/client/index.js). With single sign-on (the gateway's
// login.oidc) the page offers "Sign in with …": the gateway starts that session itself, in its HttpOnly tg_*
// cookies, and the page uses it with fetch (the cookies go along; unsafe methods send x-csrf-token).
import { createClient } from '/demo/client.js'

const $ = (id) => document.getElementById(id)
const byPassword = createClient({ key: 'tokengate-demo' }) // baseUrl: this page's origin; tokens in localStorage

/** The session single sign-on started, in cookies: what the page needs of a client, with fetch. */
function cookieSession () {
  const csrf = () => decodeURIComponent(/(?:^|;\s*)tg_csrf=([^;]*)/.exec(document.cookie)?.[1] ?? '')
  const listeners = new Set()
  let signedIn = false
  let sessionId = null
  const set = (value) => {
    if (value === signedIn) return
    signedIn = value
    for (const l of [...listeners]) l(value)
  }
  async function call (path, method = 'GET') {
    const res = await fetch(path, { method, headers: method === 'GET' ? {} : { 'x-csrf-token': csrf() } })
    if (res.status === 401) set(false)
    return res
  }
  async function json (res) {
    const data = await res.json().catch(() => ({}))
    if (!res.ok) throw Object.assign(new Error(data.message ?? `HTTP ${res.status}`), { code: data.code })
    return data
  }
  return {
    get signedIn () { return signedIn },
    get accessExpiresAt () { return null },
    get sessionId () { return sessionId },
    fetch: (path) => call(path),
    async sessions () {
      const list = await json(await call('/auth/sessions'))
      sessionId = list.find((s) => s.current)?.id ?? null
      set(true)
      return list
    },
    async revokeSession (id) {
      await call(`/auth/sessions/${encodeURIComponent(id)}`, 'DELETE')
      if (id === sessionId) set(false)
    },
    async logout () { try { await call('/auth/logout', 'POST') } finally { set(false) } },
    async logoutAll () { try { await call('/auth/logout-all', 'POST') } finally { set(false) } },
    onChange (listener) {
      listeners.add(listener)
      return () => { listeners.delete(listener) }
    }
  }
}

// The client in use: the password login's, or (back from the provider, with a live cookie session) single sign-on's.
let auth = byPassword
let unsubscribe = () => {}
function use (client) {
  unsubscribe()
  auth = client
  unsubscribe = auth.onChange((signedIn) => {
    render()
    if (signedIn) loadSessions()
    else if (auth !== byPassword) use(byPassword)
  })
  render()
}
let lastExpiry = null
let renewals = 0
let sessionsAt = 0
let loading = false

function render () {
  $('signed-out').hidden = auth.signedIn
  $('signed-in').hidden = !auth.signedIn
  $('session-id').textContent = auth.sessionId ?? ''
  if (!auth.signedIn) {
    $('sessions').replaceChildren()
    $('result').textContent = ''
    lastExpiry = null
    renewals = 0
    showRenewals()
  }
}

function showRenewals () {
  $('renewals').textContent = String(renewals)
  $('renewals-unit').textContent = renewals === 1 ? 'time' : 'times'
}

/** "Chrome on Linux" from a user agent, roughly; the full string is in the cell's title. */
function device (ua) {
  if (!ua) return 'unknown device'
  const browser = /Edg\//.test(ua)
    ? 'Edge'
    : /Firefox\//.test(ua) ? 'Firefox' : /Chrom(e|ium)\//.test(ua) ? 'Chrome' : /Safari\//.test(ua) ? 'Safari' : ua.split(/[ /]/)[0]
  const os = /Windows/.test(ua) ? 'Windows' : /Android/.test(ua) ? 'Android' : /iPhone|iPad/.test(ua) ? 'iOS' : /Mac OS X/.test(ua) ? 'macOS' : /Linux/.test(ua) ? 'Linux' : ''
  return os ? `${browser} on ${os}` : browser
}

function ago (iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))
  if (s < 60) return `${s} s ago`
  if (s < 3600) return `${Math.floor(s / 60)} min ago`
  return new Date(iso).toLocaleString()
}

function cell (text, title) {
  const td = document.createElement('td')
  td.textContent = text
  if (title) td.title = title
  return td
}

async function loadSessions () {
  sessionsAt = Date.now()
  let list
  try {
    list = await auth.sessions()
  } catch {
    return // a 401 no refresh could mend has signed the client out; onChange renders that
  }
  $('sessions').replaceChildren(...list.map((s) => {
    const tr = document.createElement('tr')
    tr.dataset.id = s.id
    if (s.current) tr.className = 'current'
    const name = cell(device(s.userAgent), s.userAgent ?? '')
    if (s.current) name.insertAdjacentHTML('beforeend', '<span class="badge">this browser</span>')
    const revoke = document.createElement('button')
    revoke.type = 'button'
    revoke.className = 'quiet revoke'
    revoke.textContent = 'Revoke'
    revoke.onclick = async () => {
      revoke.disabled = true
      try { await auth.revokeSession(s.id) } catch {}
      if (auth.signedIn) await loadSessions()
    }
    const actions = document.createElement('td')
    actions.append(revoke)
    tr.append(name, cell(s.ip ?? '–'), cell(ago(s.lastUsedAt), s.lastUsedAt), cell(ago(s.createdAt), s.createdAt), actions)
    return tr
  }))
}

// The countdown. When the access token has run out (and every 5 s), the page lists the sessions: that request
// carries the refresh token too, the gateway's refresh hook answers it with new tokens, and the countdown
// starts again. The page never calls /auth/refresh.
function tick () {
  if (!auth.signedIn) return
  const expiry = auth.accessExpiresAt
  if (lastExpiry !== null && expiry !== null && expiry > lastExpiry) { renewals++; showRenewals() }
  lastExpiry = expiry
  const left = expiry === null ? null : Math.max(0, Math.ceil((expiry - Date.now()) / 1000))
  $('countdown').textContent = left === null ? '–' : `${left} s`
  if (!loading && (left === 0 || Date.now() - sessionsAt > 5000)) {
    loading = true
    loadSessions().finally(() => { loading = false })
  }
}

$('login').addEventListener('submit', async (event) => {
  event.preventDefault()
  const form = new FormData(event.target)
  $('login-error').hidden = true
  if (auth !== byPassword) use(byPassword)
  try {
    await auth.login({ username: form.get('username'), password: form.get('password') })
  } catch (err) {
    $('login-error').textContent = `${err.message}${err.code ? ` (${err.code})` : ''}`
    $('login-error').hidden = false
  }
})

$('call').addEventListener('click', async () => {
  const res = await auth.fetch('/api/hello')
  const text = await res.text()
  let shown = text
  try { shown = JSON.stringify(JSON.parse(text), null, 2) } catch {}
  $('result').textContent = `${res.status} ${res.statusText}\n${shown}`
})
$('logout').addEventListener('click', () => { auth.logout().catch(() => {}) })
$('logout-all').addEventListener('click', () => { auth.logoutAll().catch(() => {}) })

// Single sign-on: the gateway names the provider when it has one (and says whether it has a password login).
const sso = document.body.dataset.sso ?? ''
if (sso !== '') {
  $('sso-name').textContent = sso
  $('sso').hidden = false
}
if (document.body.dataset.password === 'false') $('login').hidden = true

use(byPassword)
if (auth.signedIn) loadSessions()
// Back from the provider: the tg_csrf cookie says a cookie session may be there; GET /auth/sessions tells.
if (!auth.signedIn && sso !== '' && /(?:^|;\s*)tg_csrf=/.test(document.cookie)) {
  const session = cookieSession()
  use(session)
  await session.sessions().catch(() => {})
  if (!session.signedIn) use(byPassword)
}
setInterval(tick, 250)
window.demoReady = true
