import pino, { type Logger } from 'pino';

/** Fields that never reach a log line, wherever they appear. */
export const REDACT_PATHS = [
  'authorization', '*.authorization', 'proxyAuthorization', '*.proxyAuthorization',
  'headers.authorization', 'headers["proxy-authorization"]',
  'token', '*.token', 'password', '*.password', 'secret', '*.secret', 'hs256Secret', '*.hs256Secret', 'credential', '*.credential',
];

/** JSON logs for machines; pino-pretty when a person watches a terminal in development. */
export function createLogger(opts: { level: string; pretty?: boolean }, destination?: NodeJS.WritableStream): Logger {
  const pretty = opts.pretty ?? (process.stdout.isTTY === true && process.env.NODE_ENV !== 'production');
  const base = { level: opts.level, redact: { paths: REDACT_PATHS, censor: '[redacted]' }, base: { service: 'webrtc-sip-gateway' } };
  if (destination) return pino(base, destination as pino.DestinationStream);
  if (pretty) {
    try {
      return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'HH:MM:ss.l' } } });
    } catch {
      // pino-pretty is a dev dependency: production installs log JSON.
    }
  }
  return pino(base);
}

/** SIP traces are redacted where they are written (src/sip/trace.ts). */
export { redactSipTrace } from '../sip/trace';
