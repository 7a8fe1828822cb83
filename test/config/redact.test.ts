import t from 'tap'
import { parseConfig, redactedConfig } from '../../src/config/schema.js'

t.test('config check blanks the database password but shows column names as they are', async (t) => {
  const c = parseConfig({ auth: { store: { type: 'mysql', url: 'mysql://bastion:s3cret-pw@db:3306/iot' } } }, '/srv')
  const shown = JSON.stringify(redactedConfig(c))
  t.notMatch(shown, /s3cret-pw/, 'the password is not shown')
  const store = (redactedConfig(c) as any).auth.store
  t.equal(store.password, '[redacted]')
  t.equal(store.columns.password, 'password', 'the password column name is not a secret')
  t.equal(store.columns.username, 'username')
})
