/** Audio codecs for the media engine: G.711 tables and Opus (libopus via our own binding). */
export { pcmuEncode, pcmuDecode, pcmaEncode, pcmaDecode, pcmaToPcmu, pcmuToPcma, PCMU_SILENCE, PCMA_SILENCE } from './g711';
export { OpusEncoder, OpusDecoder, liveCoders, opusFecStatus, type OpusRate } from './opus';
export { OpusToG711, G711ToOpus, OPUS_DEFAULT_BITRATE, OPUS_DEFAULT_COMPLEXITY, type G711Law } from './transcoders';
export { opusPacketSamples } from './opusPacket';
