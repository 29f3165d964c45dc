/** SDES-SRTP (RFC 3711, RFC 4568) for the SIP-side RTP leg. */
export { SrtpSession, deriveKeys } from './srtpSession';
export { parseCryptoAttribute, formatCryptoAttribute, generateSdesCrypto, chooseCrypto, SUPPORTED_SUITES, type SdesCrypto, type SrtpSuite } from './sdes';
