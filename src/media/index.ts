/** The media engine: RTP/RTCP toward SIP, SDES-SRTP, transcoding bridge, DTMF, statistics. */
export { MediaEngine } from './mediaEngine';
export { SipRtpLeg, type SipLegRemote } from './sipRtpLeg';
export { MediaBridge, type BrowserMediaPort } from './mediaBridge';
export { PortAllocator, RtpPortsExhaustedError } from './portAllocator';
export type { RtpPacketView } from './rtp';
export type { LegStats } from './stats';
