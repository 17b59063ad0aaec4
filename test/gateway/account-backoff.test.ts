// Failed logins are limited per account too (issue 15, "Also seen"): an attacker rotating client IPs gets a
// fresh per-IP + username count with every address, but the account's own count (rateLimit.failedLoginsPerUser)
// ends the guessing: past it every login as that user answers 429 until its window ends, from any IP.
// Controls: another user logs in; the per-IP + username limit alone was never reached.
import t from 'tap'
import { GATEWAY_USERS, postJson, startGateway } from '../helpers/gateway.js'

for (const redis of [true, false]) {
  t.test(`rotating IPs does not buy more guesses at one account (${redis ? 'Redis' : 'memory'})`, async t => {
    const gw = await startGateway(t, {
      trustProxy: true,
      rateLimit: { failedLogins: { max: 3, window: '1m' }, failedLoginsPerUser: { max: 5, window: '1m' } }
    }, { redis })
    const from = (ip: string): Record<string, string> => ({ 'x-forwarded-for': ip })
    let n = 0
    for (let ip = 1; ip <= 3; ip++) {
      for (let i = 0; i < 2 && n < 5; i++, n++) {
        const r = await postJson(gw.base, '/auth/login', { username: 'alice', password: `guess-${n}` }, from(`198.51.100.${ip}`))
        t.equal(r.status, 401, `guess ${n + 1} from 198.51.100.${ip}: 401 (the per-IP + username count stays under 3)`)
      }
    }
    const next = await postJson(gw.base, '/auth/login', { username: 'alice', password: 'guess-6' }, from('198.51.100.77'))
    t.equal(next.status, 429, 'a 6th guess from a fresh IP: 429')
    t.equal(next.body.code, 'TOKENGATE_RATE_LIMITED')
    t.match(next.headers.get('retry-after'), /^[1-9]\d*$/, 'with Retry-After')
    const right = await postJson(gw.base, '/auth/login', { username: 'alice', password: GATEWAY_USERS.alice }, from('203.0.113.5'))
    t.equal(right.status, 429, 'even the right password, from anywhere, until the window ends (nothing tells a guess that would have worked)')
    const bob = await postJson(gw.base, '/auth/login', { username: 'bob', password: GATEWAY_USERS.bob }, from('198.51.100.77'))
    t.equal(bob.status, 200, 'control: another account logs in from the same IP')
  })
}
