// What a user's identity may hold, as issue() (and so every login) takes it: a sub that is well-formed
// Unicode (a lone surrogate reaches Redis and the revocation feed as U+FFFD, so another instance would miss
// the user's revokeAll), and roles without a comma (they travel comma-separated in x-user-roles: "team-x,admin"
// would read as two roles upstream). Each refusal names the field; a control beside it works.
import t from 'tap'
import { buildApp } from '../helpers/app.js'

t.test('issue refuses a sub that is not well-formed Unicode, and a role with a comma, naming the field', async t => {
  const { app } = await buildApp(t)
  await t.rejects(app.tokengate.issue({ sub: 'odd\ud800user' }), { name: 'TypeError', message: /user\.sub must be well-formed Unicode/ })
  t.ok((await app.tokengate.issue({ sub: 'ünïcødé-user 🙂' })).accessToken, 'control: any well-formed sub, non-ASCII included')
  await t.rejects(app.tokengate.issue({ sub: 'u-x', roles: ['team-x,admin'] }), { name: 'TypeError', message: /user\.roles: a role cannot contain a comma/ })
  const pair = await app.tokengate.issue({ sub: 'u-x', roles: ['team-x', 'admin'] })
  t.same((await app.tokengate.verify(pair.accessToken)).roles, ['team-x', 'admin'], 'control: roles without commas')
})
