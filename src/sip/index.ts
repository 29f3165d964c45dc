/** SIP user agent library (RFC 3261): no knowledge of WebRTC, media or calls. */
export { SipUserAgent, ClientInvite, ServerInvite, ALLOW, type InviteOptions, type SipUserAgentOptions, type Credentials } from './userAgent';
export { Dialog, ReinviteSupersededError, type DialogState, type DialogEndReason } from './dialog';
export { Registration, type RegisterOptions, type RegistrationState } from './registration';
export { SipRequest, SipResponse, parseSipMessage, parseNameAddr, parseUri, type SipSource } from './message';
export type { SipTransportConfig, SipProtocol } from './transport';
export type { Clock, Timers } from './transactions';
export { redactSipTrace } from './trace';
export { OptionsPing } from './optionsPing';
export { DEFAULT_SESSION_TIMER, type SessionTimerSettings } from './sessionTimer';
export { DigestServer, type DigestVerdict } from './digestServer';
