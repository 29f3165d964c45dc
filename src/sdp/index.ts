/** SDP translation between the browser and SIP worlds (sdp-transform). */
export { buildSipOffer, buildSipAnswer, chooseSipCodec, normaliseCodecName, telephoneEventFor, parseSipAnswer, parseSipOffer, type SipMediaDescription, type SipSdpOptions, type MediaDirection, type SipCodecName } from './sipSdp';
export { checkBrowserOffer } from './browserOffer';
