import { ACC_SUBSCRIBE, ACC_WRITE, createGoAuthClient, type GoAuthClient } from '../auth/http-backend.js'
import type { HttpBackendConfig } from '../config/schema.js'
import type { Logger } from '../log.js'
import { ALLOW, deny, type Decision } from '../types.js'
import type { AclPolicy } from './policy.js'
import { isReserved } from './topics.js'

/**
 * ACL decisions from a service speaking mosquitto-go-auth's HTTP contract (`aclPath`), asked
 * with the `acc` codes mosquitto 2 gives go-auth: PUBLISH -> 2 (MOSQ_ACL_WRITE, the topic),
 * SUBSCRIBE -> 4 (MOSQ_ACL_SUBSCRIBE, the filter as sent).
 *
 * This product has no superusers, so go-auth's superuser endpoint is never called: every
 * check goes to the ACL endpoint.
 *
 * Pass `client` to share one connection pool and one outage log with the HTTP authenticator;
 * a client passed in is closed by its owner, not here.
 */
export function createHttpAclPolicy (cfg: HttpBackendConfig, log: Logger, client?: GoAuthClient): AclPolicy {
  const backend = client ?? createGoAuthClient(cfg, log)

  async function ask (username: string, clientId: string, topic: string, acc: typeof ACC_WRITE | typeof ACC_SUBSCRIBE): Promise<Decision> {
    return (await backend.checkAcl(username, clientId, topic, acc))
      ? ALLOW
      : deny(`backend denied ${acc === ACC_WRITE ? 'publish' : 'subscribe'}`)
  }

  return {
    name: 'http',
    decide (identity, action, topic): Decision | Promise<Decision> {
      // `$` topics are the server's; the service is not asked about them [MQTT-4.7.2-1].
      if (isReserved(topic)) return deny('reserved $ topic')
      // Deliberate difference from mosquitto, which asks acc=1 (MOSQ_ACL_READ) for every message
      // it delivers: aedes' forward hook is synchronous and a round trip per message would stall
      // delivery. The filter that brought this message was approved by the service (acc=4) at
      // SUBSCRIBE time, so delivery follows that answer. A service that grants a filter but
      // means to refuse some topics under it must refuse the filter instead.
      if (action === 'read') return ALLOW
      const username = identity.mqttUsername ?? identity.user
      // As mosquitto does before asking any plugin (security.c): a `+` or `#` in the username or
      // client id could turn into a wildcard in a service's pattern substitution.
      if (/[+#]/.test(username) || /[+#]/.test(identity.clientId)) return deny('wildcard character in username or client id')
      return ask(username, identity.clientId, topic, action === 'publish' ? ACC_WRITE : ACC_SUBSCRIBE)
    },
    async close () {
      if (client === undefined) await backend.close()
    }
  }
}
