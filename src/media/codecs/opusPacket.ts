/**
 * How much audio an Opus packet carries, from its TOC byte (RFC 6716 §3.1), without decoding
 * it: what a relay needs to step the RTP timestamp (48 kHz for Opus, RFC 7587 §4.1) when it
 * passes packets through.
 */

/** Frame length in 48 kHz samples by TOC config (0-11 SILK, 12-15 hybrid, 16-31 CELT). */
const FRAME_SAMPLES = [
  480, 960, 1920, 2880, 480, 960, 1920, 2880, 480, 960, 1920, 2880, // SILK: 10, 20, 40, 60 ms
  480, 960, 480, 960, //                                              hybrid: 10, 20 ms
  120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480, 960, 120, 240, 480, 960, // CELT: 2.5-20 ms
];

/** The packet's duration in 48 kHz samples; 0 when it is empty or its TOC is malformed (RFC 6716 §3.4: at most 120 ms). */
export function opusPacketSamples(packet: Uint8Array): number {
  if (packet.length === 0) return 0;
  const toc = packet[0];
  const code = toc & 3;
  let frames: number;
  if (code === 0) frames = 1;
  else if (code !== 3) frames = 2;
  else {
    if (packet.length < 2) return 0;
    frames = packet[1] & 0x3f;
  }
  const samples = frames * FRAME_SAMPLES[toc >> 3];
  return samples > 0 && samples <= 5760 ? samples : 0;
}
