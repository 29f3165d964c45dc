import { z } from 'zod';

const port = z.number({ error: 'expected an integer 1-65535' }).int('expected an integer 1-65535').min(1, 'expected an integer 1-65535').max(65535, 'expected an integer 1-65535');
const portOrZero = z.number().int().min(0).max(65535, 'expected an integer 0-65535');
const portRange = z
  .tuple([port, port])
  .refine(([a, b]) => b > a, 'expected [low, high] with high > low');
const host = z.string().min(1, 'expected an IP address or host name');
const codec = z.enum(['PCMU', 'PCMA', 'opus']);
const srtp = z.enum(['off', 'optional', 'mandatory']);
const tlsFiles = z.object({ certFile: z.string().min(1), keyFile: z.string().min(1) }).strict();

/**
 * The whole configuration, with defaults. Every key can also come from the environment
 * (GATEWAY_<SECTION>__<KEY>, see loader.ts); secrets should only come from there.
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
        transports: z.array(z.enum(['udp', 'tcp', 'tls'])).min(1).default(['udp']),
        tls: tlsFiles.optional(),
      })
      .strict()
      .prefault({}),
    trunk: z
      .object({
        uri: z.string().regex(/^sips?:/, 'expected a SIP URI such as sip:trunk.example.com:5060'),
        username: z.string().optional(),
        password: z.string().optional(),
        fromDomain: z.string().optional(),
        srtp: srtp.default('off'),
        codecs: z.array(codec).min(1).default(['PCMU', 'PCMA']),
        register: z.boolean().default(false),
        optionsKeepaliveSec: z.number().int().min(0).default(0),
        sourceCidrs: z.array(z.string()).default([]),
      })
      .strict()
      .optional(),
    demo: z.object({ enabled: z.boolean().optional(), sipPort: portOrZero.default(5062) }).strict().prefault({}),
    media: z
      .object({ host: host.default('127.0.0.1'), advertisedHost: host.optional(), portRange: portRange.default([30000, 30999]), inactivityTimeoutSec: z.number().min(1).default(30) })
      .strict()
      .prefault({}),
    webrtc: z
      .object({
        hostAddresses: z.array(host).min(1).default(['127.0.0.1']),
        bindAddress: host.optional(),
        advertisedAddress: host.optional(),
        portRange: portRange.default([40000, 40999]),
        preferPcmu: z.boolean().default(false),
        stunServers: z.array(z.string()).default([]),
        turnServers: z.array(z.object({ urls: z.union([z.string(), z.array(z.string())]), username: z.string().optional(), credential: z.string().optional() }).strict()).default([]),
      })
      .strict()
      .prefault({}),
    auth: z
      .object({
        mode: z.enum(['demo', 'token']).optional(),
        hs256Secret: z.string().min(32, 'expected at least 32 characters').optional(),
        es256PublicKeyFile: z.string().optional(),
        issuer: z.string().optional(),
        audience: z.string().optional(),
        maxTokenLifetimeSec: z.number().int().min(60).default(3600),
      })
      .strict()
      .prefault({}),
    dialplan: z
      .object({
        defaultCountryCode: z.string().regex(/^\d{1,3}$/, 'expected 1-3 digits').default('1'),
        allow: z.array(z.string()).default([]),
        deny: z.array(z.string()).default([]),
        allowInternational: z.boolean().default(false),
        allowPremium: z.boolean().default(false),
      })
      .strict()
      .prefault({}),
    inbound: z
      .object({ didMap: z.record(z.string(), z.string()).default({}), routeByUserPart: z.boolean().default(true), ringTimeoutSec: z.number().min(5).default(45) })
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
      })
      .strict()
      .prefault({}),
    edge: z.object({ allowedOrigins: z.array(z.string()).default([]) }).strict().prefault({}),
    cdr: z.object({ path: z.string().min(1).default('cdr.jsonl') }).strict().prefault({}),
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

/** Keys whose values are secrets: never logged, shown as "***" by redactConfig. */
export const SECRET_PATHS = ['trunk.password', 'auth.hs256Secret'];
