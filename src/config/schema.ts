import { isIP } from 'node:net';
import { z } from 'zod';
import { OPUS_DEFAULT_COMPLEXITY } from '../media/codecs/transcoders';

/** How long an outbound call may go unanswered (trunk.answerTimeoutSec; demo calls too). */
export const DEFAULT_ANSWER_TIMEOUT_SEC = 120;

const intIn = (min: number, max: number) => {
  const msg = `expected an integer ${min}-${max}`;
  return z.number({ error: msg }).int(msg).min(min, msg).max(max, msg);
};
const port = intIn(1, 65535);
const portOrZero = intIn(0, 65535);
const portRange = z
  .tuple([port, port], { error: 'expected [low, high], two ports' })
  .refine(([a, b]) => b > a, 'expected [low, high] with high > low');
/** Even/odd RTP/RTCP pairs in a port range (RFC 3550 §11). */
function rtpPairs([low, high]: [number, number]): number {
  const first = low % 2 === 0 ? low : low + 1;
  return Math.max(0, Math.floor((high - first + 1) / 2));
}
/** A DNS server: an IP address, with a port or not ("10.0.0.2", "10.0.0.2:5353", "[2001:db8::53]:53"). */
const dnsServer = z.string().refine((v) => {
  const m = /^\[([^\]]+)\](?::(\d{1,5}))?$/.exec(v) ?? /^([^:]+)(?::(\d{1,5}))?$/.exec(v);
  const ip = m?.[1] ?? (isIP(v) === 6 ? v : '');
  const p = m?.[2] === undefined ? 53 : Number(m[2]);
  return isIP(ip) !== 0 && p >= 1 && p <= 65535;
}, 'expected a DNS server as an IP address, optionally with :port (IPv6 in brackets then)');
const host = z.string({ error: 'expected an IP address or host name' }).min(1, 'expected an IP address or host name');
const codec = z.enum(['PCMU', 'PCMA', 'opus']);
const srtp = z.enum(['off', 'optional', 'mandatory']);
const tlsFiles = z.object({ certFile: z.string().min(1, 'expected a file path'), keyFile: z.string().min(1, 'expected a file path') }).strict();

// No user part (RFC 7064/7065 have none: a browser refuses turn:user:pass@host, and a password
// there would reach the logs, which mask only `credential`).
const stunUri = z.string().regex(/^stuns?:[^\s@]+$/, 'expected a STUN URI such as stun:stun.example.com:3478');
const iceUri = z.string().regex(/^(stuns?|turns?):[^\s@]+$/, 'expected a TURN URI such as turn:turn.example.com:3478?transport=udp (user name and password go in username and credential)');
const cidr = z.string().refine(isCidr, 'expected an IP address or CIDR such as 203.0.113.0/24');
const origin = z.string().refine((s) => /^https?:\/\/(\*\.)?[^/\s*?#@]+$/.test(s), 'expected an origin such as https://app.example.com or https://*.example.com (scheme and host, no path or trailing slash)');
const numberPattern = z.string().regex(/^[+0-9*?#]+$/, 'expected a number pattern such as +1555* (digits and +; * any suffix, ? one character)');
/**
 * A SIP URI. A password in it (sip:user:password@host; RFC 3261 §19.1.1 advises against) went
 * wherever the URI goes — the start log line, --check-config, error messages — so it is refused:
 * the password has a key of its own.
 */
const sipUri = (example: string, passwordKey: string) => z
  .string({ error: `expected a SIP URI such as ${example}` })
  .regex(/^sips?:[^\s]+$/, `expected a SIP URI such as ${example}`)
  .refine((u) => !/^sips?:[^:@]*:[^@]*@/i.test(u), `expected no password in the URI (sip:user:password@…): set ${passwordKey} instead`);
/**
 * A name → value map. Without a prototype, so that a lookup by a name from the network (a DID,
 * a digest user name) finds only what was configured: users["constructor"] was Object, whose
 * text a caller could use as the password.
 */
const lookupMap = <T>(entries: Record<string, T>): Record<string, T> => Object.assign(Object.create(null) as Record<string, T>, entries);

/** A record's error for a key its key schema refuses (zod's own says only "Invalid key in record"). */
const keyError = (message: string) => (issue: { code?: string }) => (issue.code === 'invalid_key' ? message : undefined);

function isCidr(s: string): boolean {
  const [ip, len, extra] = s.split('/');
  const v = isIP(ip);
  if (!v || extra !== undefined) return false;
  if (len === undefined) return true;
  return /^\d{1,3}$/.test(len) && Number(len) <= (v === 4 ? 32 : 128);
}

/**
 * The whole configuration, with defaults. Every key can also come from the environment
 * (GATEWAY_<SECTION>__<KEY>, see loader.ts); secrets should come from there.
 */
export const ConfigSchema = z
  .object({
    http: z.object({ host: host.default('127.0.0.1'), port: port.default(8080), tls: tlsFiles.optional() }).strict().prefault({}),
    sip: z
      .object({
        host: host.default('127.0.0.1'),
        port: portOrZero.default(5060),
        tlsPort: port.optional(),
        advertisedHost: host.optional(),
        transports: z
          .array(z.enum(['udp', 'tcp', 'tls']))
          .min(1, 'expected at least one of udp, tcp, tls')
          .refine((t) => new Set(t).size === t.length, 'expected each transport at most once')
          .default(['udp']),
        /** caFile: CA certificates (PEM) trusted for the certificates of TLS servers we connect to (the trunk's: a private CA), besides the public roots. */
        tls: tlsFiles.extend({ caFile: z.string().min(1, 'expected a file path').optional() }).strict().optional(),
        /** RFC 4028 session timers: asked for on our INVITEs; 0 turns them off. */
        sessionExpiresSec: z.union([z.literal(0), intIn(90, 86400)], { error: 'expected 0 (off) or an integer 90-86400' }).default(1800),
        /** Smallest interval we accept from a peer (answered 422 below it). */
        minSessionExpiresSec: intIn(90, 86400).default(90),
        /**
         * TCP/TLS: inbound connections open at once, per listening transport (TLS ones counted
         * from accept, before their handshake). More are closed at once: each holds a file
         * descriptor the RTP sockets need too.
         */
        maxConnections: intIn(1, 1_000_000).default(1000),
        /** TCP/TLS: inbound connections open at once from one source address. */
        maxConnectionsPerIp: intIn(1, 1_000_000).default(50),
        /**
         * TCP/TLS: an inbound connection that has not sent a complete SIP message this long
         * after connecting (TLS handshake included) is closed; the 5-minute idle timeout applies after.
         */
        firstMessageTimeoutSec: z.number({ error: 'expected a number of seconds 1-300' }).min(1, 'expected a number of seconds 1-300').max(300, 'expected a number of seconds 1-300').default(10),
        /**
         * DNS servers for the SIP side's lookups (SRV, then address records: RFC 3263), as
         * "ip", "ip:port" or "[ipv6]:port"; the system's resolver when absent.
         */
        dnsServers: z.array(dnsServer).min(1, 'expected at least one DNS server, or leave dnsServers out').optional(),
      })
      .strict()
      .prefault({}),
    trunk: z
      .object({
        uri: sipUri('sip:trunk.example.com:5060', 'trunk.password'),
        username: z.string().min(1, 'expected a non-empty user name').optional(),
        password: z.string().min(1, 'expected a non-empty password').optional(),
        fromDomain: z.string().optional(),
        /**
         * Every request toward the trunk (INVITE, REGISTER, OPTIONS) goes to this proxy (an SBC)
         * with a pre-loaded Route; in-dialog requests follow the Record-Route it adds.
         */
        outboundProxy: sipUri('sip:sbc.example.com:5060', 'trunk.password').optional(),
        srtp: srtp.default('off'),
        codecs: z.array(codec).min(1, 'expected at least one codec').default(['PCMU', 'PCMA']),
        register: z.boolean().default(false),
        // At most a day: a delay past 2^31 ms (24.8 days) makes Node's timers fire at once, so
        // a large "rarely" sent OPTIONS every millisecond.
        optionsKeepaliveSec: z.number().int().min(0).max(86400).default(0),
        /** A call the trunk has not answered after this long is CANCELled (cause no-answer). */
        answerTimeoutSec: z.number().min(1).max(3600).default(DEFAULT_ANSWER_TIMEOUT_SEC),
        sourceCidrs: z.array(cidr).default([]),
      })
      .strict()
      .optional(),
    demo: z.object({ enabled: z.boolean().optional(), sipPort: portOrZero.default(5062) }).strict().prefault({}),
    media: z
      .object({ host: host.default('127.0.0.1'), advertisedHost: host.optional(), portRange: portRange.default([30000, 30999]), inactivityTimeoutSec: z.number().min(1).default(30), opusComplexity: z.number().int().min(0).max(10).default(OPUS_DEFAULT_COMPLEXITY), workers: z.number().int().min(0).max(64).default(0) })
      .strict()
      // Each media worker gets its own share of the range: at least one RTP/RTCP pair each.
      .refine((m) => m.workers <= rtpPairs(m.portRange), { message: 'expected at least one even/odd RTP/RTCP port pair per media worker in portRange', path: ['workers'] })
      .prefault({}),
    webrtc: z
      .object({
        hostAddresses: z.array(host).min(1, 'expected at least one address').default(['127.0.0.1']),
        bindAddress: host.optional(),
        advertisedAddress: host.optional(),
        portRange: portRange.default([40000, 40999]),
        preferPcmu: z.boolean().default(false),
        /** A browser whose ICE/DTLS has not connected after this long is given up (call ends ice-failed). */
        connectTimeoutSec: z.number().min(2, 'expected at least 2 seconds').max(120).default(15),
        stunServers: z.array(stunUri).default([]),
        turnServers: z
          .array(z.object({ urls: z.union([iceUri, z.array(iceUri).min(1)], { error: 'expected a TURN URI or a list of them' }), username: z.string().optional(), credential: z.string().optional() }).strict())
          .default([]),
      })
      .strict()
      .prefault({}),
    auth: z
      .object({
        mode: z.enum(['demo', 'token']).optional(),
        hs256Secret: z.string().min(32, 'expected at least 32 characters').optional(),
        es256PublicKeyFile: z.string().min(1, 'expected a file path').optional(),
        issuer: z.string().optional(),
        audience: z.string().optional(),
        maxTokenLifetimeSec: z.number().int().min(60).default(3600),
      })
      .strict()
      .prefault({}),
    dialplan: z
      .object({
        defaultCountryCode: z.string().regex(/^\d{1,3}$/, 'expected 1-3 digits').default('1'),
        allow: z.array(numberPattern).default([]),
        deny: z.array(numberPattern).default([]),
        allowInternational: z.boolean().default(false),
        allowPremium: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    inbound: z
      .object({
        didMap: z.record(z.string().min(1), z.string().min(1, 'expected the user the number rings, not an empty name'), { error: keyError('expected a number (a DID or the user part it is called at), not an empty one') }).transform(lookupMap).prefault({}),
        routeByUserPart: z.boolean().default(true),
        // At most an hour: past 2^31 ms the timer fired at once and every inbound call got 480.
        ringTimeoutSec: z.number().min(5).max(3600).default(45),
        /** While a user has a tab open, REGISTER sip:<user>@<domain> at this registrar (calls to them reach us). */
        registerUsers: z
          .object({
            registrar: sipUri('sip:pbx.example.com', 'inbound.registerUsers.password'),
            domain: z.string().min(1, 'expected the domain of the users\' addresses of record'),
            expiresSec: z.number().int().min(60).max(86400).default(300),
            password: z.string().min(1).optional(),
          })
          .strict()
          .optional(),
        /** INVITEs from sources outside trunk.sourceCidrs are challenged (401) for these credentials instead of refused. */
        digest: z
          .object({
            realm: z.string().min(1).default('webrtc-sip-gateway'),
            users: z.record(z.string().min(1), z.string().min(8, 'expected a password of at least 8 characters'), { error: keyError('expected a user name, not an empty one') }).refine((u) => Object.keys(u).length > 0, 'expected at least one user').transform(lookupMap),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({}),
    limits: z
      .object({
        connectsPerIpPerMin: z.number().int().min(1).default(30),
        callsPerIdentityPerMin: z.number().int().min(1).default(10),
        maxCallsPerIdentity: z.number().int().min(1).default(2),
        maxCallsGlobal: z.number().int().min(1).default(200),
        wsMaxMessageBytes: z.number().int().min(1024).default(65536),
        wsMessagesPerSec: z.number().int().min(1).default(50),
        /** A tab that does not answer the server's WebSocket ping within this is gone (a laptop asleep sends no FIN): its calls end. */
        wsHeartbeatSec: z.number().min(1).max(300).default(20),
        /** A WebSocket that has not authenticated (hello) within this is closed. */
        wsHelloTimeoutSec: z.number().min(1).max(300).default(10),
        /**
         * A tab whose WebSocket dropped without a close frame keeps its calls this long, for a
         * new connection to take them over (docs/protocol.md); 0: they end at once.
         */
        wsResumeGraceSec: z.number().min(0).max(300).default(20),
      })
      .strict()
      .prefault({}),
    edge: z.object({ allowedOrigins: z.array(origin).default([]) }).strict().prefault({}),
    cdr: z.object({ path: z.string().min(1, 'expected a file path').default('cdr.jsonl') }).strict().prefault({}),
    drain: z.object({ timeoutSec: z.number().min(0).default(30) }).strict().prefault({}),
    log: z.object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'), pretty: z.boolean().optional() }).strict().prefault({}),
  })
  .strict();

export type GatewayConfigInput = z.input<typeof ConfigSchema>;
type Parsed = z.output<typeof ConfigSchema>;

/** The validated configuration with derived defaults resolved. */
export type GatewayConfig = Parsed & {
  demo: Parsed['demo'] & { enabled: boolean };
  auth: Parsed['auth'] & { mode: 'demo' | 'token' };
};

/**
 * Keys whose values are secrets: never printed in errors, shown as "***" by redactConfig.
 * `*` matches any list index or key.
 */
export const SECRET_PATHS = ['trunk.password', 'auth.hs256Secret', 'webrtc.turnServers.*.credential', 'inbound.digest.users', 'inbound.registerUsers.password'];
