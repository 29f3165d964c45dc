import { isIP } from 'node:net';
import type { GatewayConfig } from './config';
import type { Routing } from './calls/callManager';
import type { Identity } from './calls/callBase';
import type { OutboundTarget } from './calls/outboundCall';
import { evaluateDestination, ipInCidrs } from './edge';
import { DEMO_NUMBERS } from './demo/demoEndpoint';
import { parseUri } from './sip';
import { hostForUri } from './sip/userAgent';
import type { SipUri } from './sip/message';

/**
 * Where calls go: the configured trunk, or the built-in demo endpoint when there is none.
 * Deny-by-default dial plan apart from the demo numbers.
 */
export function buildRouting(c: GatewayConfig, demoUri: string | null): Routing {
  const trunk = c.trunk;
  const trunkUri = trunk ? parseUri(trunk.uri) : null;
  if (trunk && !trunkUri) throw new Error(`trunk.uri is not a SIP URI: ${trunk.uri}`);
  const demoHostPort = demoUri ? demoUri.replace(/^sip:/, '') : null;
  const trusted = [...(trunk?.sourceCidrs ?? [])];
  // Peers named by IP address are trusted as such; a host name would need a DNS lookup (and
  // may resolve to other addresses than the peer sends from): those go in trunk.sourceCidrs.
  const trustLiteral = (u: SipUri | null) => {
    const host = u?.host.replace(/^\[|\]$/g, '');
    if (host && isIP(host)) trusted.push(host);
  };
  trustLiteral(trunkUri);
  // The trunk's calls to us come through its SBC when we send ours through it.
  const proxyUri = trunk?.outboundProxy ? parseUri(trunk.outboundProxy) : null;
  if (trunk?.outboundProxy && !proxyUri) throw new Error(`trunk.outboundProxy is not a SIP URI: ${trunk.outboundProxy}`);
  trustLiteral(proxyUri);
  // Up to here, the trunk's own addresses: its challenges get its credentials, no one else's do.
  const trunkSources = [...trusted];
  // The PBX we register browser users at routes their calls to us: its INVITEs are expected.
  const registrar = c.inbound.registerUsers?.registrar;
  const registrarUri = registrar ? parseUri(registrar) : null;
  if (registrar && !registrarUri) throw new Error(`inbound.registerUsers.registrar is not a SIP URI: ${registrar}`);
  trustLiteral(registrarUri);
  if (demoUri) trusted.push('127.0.0.0/8');
  const fromHost = hostForUri(trunk?.fromDomain ?? c.sip.advertisedHost ?? c.sip.host);

  return {
    checkDestination(to: string, identity: Identity) {
      const t = to.trim();
      if (demoHostPort && (DEMO_NUMBERS as readonly string[]).includes(t) && (!identity.dest || identity.dest.some((p) => p === t || p === '*'))) return { allowed: true, number: t };
      if (!trunk) return { allowed: false, reason: `${t.slice(0, 32)} is not a demo number (1000 echo, 1001 tone, 1002 busy) and no trunk is configured` };
      const d = evaluateDestination(t, c.dialplan, identity.dest);
      return d.allowed ? { allowed: true, number: d.normalized } : { allowed: false, reason: d.reason };
    },
    outboundTarget(number: string, identity: Identity): OutboundTarget {
      const callerId = identity.callerId ?? identity.id;
      if (demoHostPort && (DEMO_NUMBERS as readonly string[]).includes(number)) {
        return { requestUri: `sip:${number}@${demoHostPort}`, fromUri: `sip:${encodeURIComponent(callerId)}@${hostForUri(c.sip.advertisedHost ?? c.sip.host)}`, fromDisplay: identity.id, demo: true };
      }
      const u = trunkUri!;
      const params = Object.entries(u.params).map(([k, v]) => (v === null ? `;${k}` : `;${k}=${v}`)).join('');
      return {
        requestUri: `${u.scheme}:${encodeURIComponent(number).replace(/^%2B/, '+')}@${u.host}${u.port ? `:${u.port}` : ''}${params}`,
        fromUri: `sip:${encodeURIComponent(callerId).replace(/^%2B/, '+')}@${fromHost}`,
        credentials: trunk!.username && trunk!.password ? { username: trunk!.username, password: trunk!.password } : undefined,
        outboundProxy: trunk!.outboundProxy,
      };
    },
    inboundUser(reqUser: string, toUser: string) {
      const map = c.inbound.didMap;
      return map[reqUser] ?? map[toUser] ?? (c.inbound.routeByUserPart && reqUser ? reqUser : null);
    },
    trunkCredentials(sourceIp: string) {
      if (!trunk?.username || !trunk.password || !ipInCidrs(sourceIp, trunkSources)) return undefined;
      return { username: trunk.username, password: trunk.password };
    },
    trustedSource(ip: string) {
      return ipInCidrs(ip, trusted);
    },
  };
}
