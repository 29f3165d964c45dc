/** The media engine: RTP/RTCP toward SIP, SDES-SRTP, transcoding bridge, DTMF, statistics. */
export { MediaEngine, LocalBridge, type MediaEngineOptions } from './mediaEngine';
export type { MediaPlane, MediaUsage, SipLegHandle, BridgeHandle, BridgeStats } from './plane';
export { SipRtpLeg, type SipLegRemote } from './sipRtpLeg';
export { MediaBridge, type BrowserMediaPort } from './mediaBridge';
export { PortAllocator, RtpPortsExhaustedError } from './portAllocator';
export type { RtpPacketView } from './rtp';
export type { LegStats } from './stats';
