import type { Logger } from 'pino';

/**
 * SIP message traces for debug logs. Credentials never reach a log: Authorization /
 * Proxy-Authorization values and SDES master keys (a=crypto … inline:KEY) are replaced.
 */
export function redactSipTrace(text: string): string {
  return text
    .replace(/^((?:Proxy-)?Authorization[ \t]*:).*$/gim, '$1 [redacted]')
    .replace(/(inline:)[^\s|]+/g, '$1[redacted]');
}

/** One debug line per SIP message in or out (only built when debug is enabled). */
export function traceSip(log: Logger, direction: 'in' | 'out', protocol: string, host: string, port: number, data: string | Buffer): void {
  if (!log.isLevelEnabled('debug')) return;
  const text = typeof data === 'string' ? data : data.toString('utf8');
  log.debug({ sip: redactSipTrace(text.length > 8192 ? `${text.slice(0, 8192)}…` : text), direction, protocol, remote: `${host}:${port}` }, direction === 'in' ? 'SIP received' : 'SIP sent');
}
