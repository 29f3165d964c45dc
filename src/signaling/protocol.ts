import { z } from 'zod';
import type { EndCause } from '../calls/causes';

/** Signaling protocol version 1 (docs/protocol.md): the schema is the single source of truth. */
export const PROTOCOL_VERSION = 1;

const callId = z.string().min(1).max(64);
const sdp = z.string().min(10).max(32 * 1024);
const headerName = z.string().regex(/^X-[A-Za-z0-9-]{1,60}$/, 'only X- headers are allowed');
const CallRef = z.string().max(64);

export const ClientMessage = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('hello'), version: z.literal(PROTOCOL_VERSION), token: z.string().max(8192).optional(),
    /** Take over the calls of a dropped connection (docs/protocol.md: its welcome's sessionId and resumeToken). */
    resume: z.object({ sessionId: z.string().max(64), token: z.string().max(128) }).optional(),
  }),
  z.object({
    type: z.literal('call'),
    /** Omitted: the token's fixed destination (the widget's case: the site decides, not the visitor). */
    to: z.string().min(1).max(64).optional(),
    sdp,
    ref: CallRef.optional(),
    headers: z
      // No control characters at all (C0 but tab, DEL, C1): line breaks would inject headers,
      // and the rest is not SIP text (RFC 3261 §25.1) — a strict trunk would refuse the call.
      .record(headerName, z.string().max(256).regex(/^[^\x00-\x08\x0a-\x1f\x7f-\x9f]*$/, 'header values cannot contain line breaks or other control characters'))
      .refine((h) => Object.keys(h).length <= 10, 'at most 10 headers')
      .optional(),
  }),
  z.object({
    type: z.literal('candidate'),
    callId,
    candidate: z.string().max(1024).nullable(),
    sdpMid: z.string().max(64).nullable().optional(),
    sdpMLineIndex: z.number().int().min(0).max(16).nullable().optional(),
  }),
  z.object({ type: z.literal('accept'), callId, sdp }),
  z.object({ type: z.literal('reject'), callId, reason: z.enum(['busy', 'declined']).optional() }),
  z.object({ type: z.literal('hangup'), callId }),
  z.object({ type: z.literal('dtmf'), callId, digits: z.string().regex(/^[0-9*#A-Da-d]{1,32}$/, 'digits are 0-9 * # A-D, at most 32') }),
  /** The browser's new peer connection for a call whose network path changed (its offer). */
  z.object({ type: z.literal('restart'), callId, sdp, ref: CallRef.optional() }),
  /** Blind transfer of an answered call's far end to `to` (checked as a `call`'s `to` is). */
  z.object({ type: z.literal('transfer'), callId, to: z.string().min(1).max(64), ref: CallRef.optional() }),
  z.object({ type: z.literal('hold'), callId }),
  z.object({ type: z.literal('unhold'), callId }),
  z.object({ type: z.literal('ping') }),
]);
export type ClientMessage = z.infer<typeof ClientMessage>;


export type ErrorCode =
  | 'bad-message' | 'unknown-type' | 'not-authenticated' | 'token-missing' | 'token-invalid'
  | 'token-expired' | 'token-wrong-algorithm' | 'rate-limited' | 'too-many-calls' | 'unknown-call'
  | 'invalid-state' | 'bad-sdp' | 'draining' | 'internal'
  /** A transfer to a number the dial plan or the token does not allow. */
  | 'forbidden'
  /** A transfer the far end refused or that did not go through: the call goes on. */
  | 'transfer-failed';

/** A resumed call's state as the SDK names it. */
export type ResumedCallState = 'connecting' | 'ringing' | 'answered';

export interface IceServer { urls: string | string[]; username?: string; credential?: string }

export type ServerMessage =
  | {
    type: 'welcome'; version: number; sessionId: string; identity: string; iceServers: IceServer[]; demo: boolean;
    /** For `hello.resume` after this connection drops; valid once, while the session waits (resumeGraceMs). */
    resumeToken: string; resumeGraceMs: number;
    /** Only after a hello that asked to resume: whether it did; if so, the calls still up and what the tab missed. */
    resumed?: boolean; calls?: Array<{ callId: string; state: ResumedCallState }>; missed?: ServerMessage[];
  }
  | { type: 'calling'; callId: string; ref?: string; sdp: string }
  /** The answer to a `restart`: the call's audio moves to the new connection once it is up. */
  | { type: 'restarted'; callId: string; sdp: string; ref?: string }
  | { type: 'progress'; callId: string; status: number; earlyMedia: boolean }
  | { type: 'answered'; callId: string }
  | { type: 'incoming'; callId: string; from: string; fromName?: string; to: string; sdp: string }
  | { type: 'ended'; callId: string; ref?: string; cause: EndCause; sipStatus?: number; sipReason?: string }
  | { type: 'held' | 'resumed'; callId: string; by: 'local' | 'remote' }
  | { type: 'dtmf'; callId: string; digit: string }
  /** The transfer target's provisional status as the transferee reports it (NOTIFY sipfrag 1xx). */
  | { type: 'transfer-progress'; callId: string; status: number; ref?: string }
  /**
   * A request refused. `request`: the type of the message it answers (absent when that is not
   * known: invalid JSON, unknown type, binary frame). `ref`: that of a refused `call` or
   * `restart`, so the tab knows which of its attempts failed (a refused `call` gets this or
   * `ended`, never both).
   * `callId`: the call a refused request was about.
   */
  | { type: 'error'; code: ErrorCode; message: string; request?: ClientMessage['type']; ref?: string; callId?: string; retryAfterMs?: number; sipStatus?: number }
  | { type: 'pong' };

/**
 * Parses one frame; returns a protocol error instead of throwing. A frame of a known type that
 * fails validation still gives its type, the `ref` of a `call` or `restart` and the `callId` of
 * a request about a call when those are usable, so that the error names what it refuses.
 */
export function parseClientMessage(text: string): { ok: true; msg: ClientMessage } | { ok: false; code: ErrorCode; message: string; request?: ClientMessage['type']; ref?: string; callId?: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { ok: false, code: 'bad-message', message: 'frame is not valid JSON' };
  }
  if (typeof json !== 'object' || json === null || typeof (json as { type?: unknown }).type !== 'string') {
    return { ok: false, code: 'bad-message', message: 'message must be an object with a string "type"' };
  }
  const type = (json as { type: string }).type;
  const option = ClientMessage.options.find((o) => o.shape.type.value === type);
  if (!option) {
    return { ok: false, code: 'unknown-type', message: `unknown message type "${type.slice(0, 32)}"` };
  }
  const r = ClientMessage.safeParse(json);
  if (!r.success) {
    const issue = r.error.issues[0];
    const where = issue.path.length ? issue.path.join('.') : 'message';
    // The refused `call` or `restart` named, when it can be: its ref, so the tab ends that
    // attempt now rather than at its timeout.
    const ref = type === 'call' || type === 'restart' || type === 'transfer' ? CallRef.safeParse((json as { ref?: unknown }).ref) : undefined;
    // And any request about a call names that call, when its callId is usable.
    const about = 'callId' in option.shape ? callId.safeParse((json as { callId?: unknown }).callId) : undefined;
    return { ok: false, code: 'bad-message', message: `${type}: ${where}: ${issue.message}`, request: option.shape.type.value, ref: ref?.success ? ref.data : undefined, callId: about?.success ? about.data : undefined };
  }
  return { ok: true, msg: r.data };
}
