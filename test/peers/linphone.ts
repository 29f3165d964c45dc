import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tempDir } from '../support/tempDir';

/**
 * Linphone's console client (Debian package linphone-cli: linphonec 5.1.65 on liblinphone
 * 5.1.65, belle-sip 5.1.64 and mediastreamer2 5.1.64) as a second SIP stack, independent of
 * baresip and of our own, on loopback only. One process per instance, in a fresh directory of
 * its own that is its HOME too, driven through its stdin and read from its stdout and its debug
 * log (-d 6 -l FILE: every SIP message it sends and receives is in there).
 *
 * What was learnt getting it to run headless (none of it is in its manual page):
 *
 * - linphonec never creates a configuration: `-c FILE` reads and *rewrites* FILE (it adds every
 *   default it used). Codecs not listed in it are appended enabled (opus, speex…): to offer and
 *   accept PCMU only, every other codec it has must be listed with enabled=0.
 * - Its call database lives at $HOME/.local/share/linphone/linphone.db. When that directory is
 *   missing the core fails to start ("Unable to open linphone database") *silently*: the prompt
 *   works, but no SIP port is bound and every `call` fails with "Error from
 *   linphone_core_invite". So HOME is the instance's directory and that directory is made first.
 *   HOME also holds its ZRTP cache (.linphone-zidcache) and readline history.
 * - Network reachability: by default (auto_net_state_mon=1) liblinphone decides whether "the
 *   network" is up from the source address a UDP connect() toward a public address gets (no
 *   packet is sent), rechecked every 5 s; a machine whose only address is 127.0.0.1 counts as
 *   down (seen in a network namespace with only loopback: SIP went DOWN three seconds into a
 *   call), and then nothing listens. auto_net_state_mon=0 makes it take the network as up and
 *   stop probing: it listens at once and stays up, whatever routes the machine has.
 * - Addresses: [sip] bind_address and [rtp] bind_address (127.0.0.1) bind its SIP and RTP sockets
 *   to loopback, and the RTP one is also the address it puts in its SDP (c= and o=);
 *   guess_hostname=0 with an explicit [sip] contact keeps the machine's address out of its
 *   From (`<sip:USER@127.0.0.1>`); its Contact is `<sip:127.0.0.1:PORT;transport=udp>`, with
 *   no user part. sip_tcp_port=0 and sip_tls_port=0: UDP only. Video is off unless -V/-C/-D,
 *   so no video port is bound.
 * - Nothing off loopback: there is no factory configuration in Debian's package and no STUN
 *   server, remote provisioning, LIME (X3DH) server, log upload or version-check URL compiled
 *   into this liblinphone (checked with `strings`), the NAT policy it writes has no STUN server,
 *   and every URI here is numeric (no DNS). It does send 20-byte STUN Binding Requests from
 *   its RTP and RTCP sockets to the *far end's* RTP and RTCP ports (mediastreamer2 opening its
 *   NAT): on RTP until the first RTP comes back, on RTCP every 500 ms until the first RTCP does
 *   — about ten per call to a gateway whose first report goes 5 s after the answer. With -d 6
 *   the log shows every socket it opens and every message it sends.
 * - Audio from files: `soundcard use files` (stdin) switches its audio to WAV files; `play W`
 *   sets the WAV sent as the microphone (8 kHz 16-bit mono here; it loops, and is also its
 *   music on hold) and `record W` the WAV the far end's audio is written to — 16-bit mono at
 *   the codec's rate (8 kHz for PCMU, 48 kHz for Opus), opened when the call's audio starts,
 *   so each call needs a fresh `record` before it.
 * - stdin is read with readline even from a pipe; each command is echoed after the prompt
 *   ("linphonec> call …"). Commands: `call sip:…`, `answer`, `terminate`, `pause`, `resume`,
 *   `autoanswer enable` (or -a); a line of digits (and * or #) sends each as DTMF (RFC 4733,
 *   its default use_rfc2833=1). Received digits are printed as "Receiving tone 5 from sip:…".
 *   It sends a digit's final event packet three times at once under one sequence number (seen
 *   on the wire): a receiver counts two duplicates per digit, or with SRTP two replays.
 * - Call progress on stdout: "Receiving new incoming call from …, assigned id N", "Call N with
 *   … connected.", "Media streams established with … for call N (audio).", "Call N has been
 *   paused by …" (the far end's hold), "Call N with … ended (REASON)." (the reason is
 *   linphone_reason_to_string: "No error" for a normal BYE), "Call N with … error.".
 * - SDES-SRTP (media_encryption=srtp): it offers RTP/SAVP with four crypto suites
 *   (AES_CM_128_HMAC_SHA1_80/_32, AES_256_CM_HMAC_SHA1_80/_32). Not mandatory, an offer refused
 *   with 488 is made again as plain RTP/AVP; as answerer it ignores a=crypto in an RTP/AVP offer
 *   (no best-effort SRTP). Mandatory (media_encryption_mandatory=1), it refuses any RTP/AVP
 *   offer, with a=crypto or not, with 488. With media_encryption=none it still answers an
 *   RTP/SAVP offer with SRTP. After a re-INVITE (hold, resume) it starts its SRTCP index at 1
 *   again under the same key: a receiver's replay check refuses those reports.
 * - SIGTERM ends it cleanly: calls up get BYE, then it exits (the handler does
 *   linphone_core_terminate_all_calls).
 */
export interface LinphoneOptions {
  sipPort: number;
  /** Its RTP port range (RTP on even ports, RTCP on the next odd one). */
  rtpPorts: [number, number];
  /** The user part of its own address (From of its calls, its Contact). */
  user?: string;
  /** WAV sent as its microphone (16-bit PCM; it loops). */
  playWav: string;
  /** SDES-SRTP (see above): 'optional' offers RTP/SAVP, falling back to RTP/AVP; 'mandatory' refuses RTP/AVP offers. */
  srtp?: 'off' | 'optional' | 'mandatory';
  /** Answers every incoming call at once (-a). */
  autoAnswer?: boolean;
  /** The codecs it offers and accepts, in its order of preference (default PCMU only). */
  codecs?: Array<'PCMU' | 'PCMA' | 'opus'>;
}

/** One SIP message as linphone sent or received it (from its debug log). */
export interface LinphoneSipMessage {
  direction: 'sent' | 'received';
  /** The other end, e.g. "UDP://127.0.0.1:28671". */
  peer: string;
  startLine: string;
  text: string;
}

export interface Linphone {
  /** Its address, for calling it. */
  uri: string;
  dir: string;
  /** Sends one line to its stdin. */
  send(line: string): void;
  /** Where its stdout is now: pass to waitFor to only look at what comes after. */
  mark(): number;
  /** Resolves with the first match of `re` in its stdout after `from`; throws after `timeoutMs`. */
  waitFor(re: RegExp, timeoutMs: number, from?: number): Promise<RegExpMatchArray>;
  /** Sets the WAV the next call's received audio is recorded to. */
  recordTo(path: string): Promise<void>;
  /** Its stdout so far. */
  stdout(): string;
  /** Its SIP messages so far (debug log). */
  sipMessages(): LinphoneSipMessage[];
  /** The end of its stdout and of its debug log's SIP traffic (for a failing test's message). */
  output(): string;
  stop(): Promise<void>;
}

/** Every audio codec this linphonec has (mime, rate, channels), as its configuration names them. */
const ALL_CODECS: Array<[string, number, number]> = [
  ['opus', 48000, 2], ['speex', 16000, 1], ['speex', 8000, 1], ['speex', 32000, 1], ['PCMU', 8000, 1], ['PCMA', 8000, 1],
  ['GSM', 8000, 1], ['G722', 8000, 1], ['G729', 8000, 1], ['iLBC', 8000, 1], ['SILK', 16000, 1],
  ['L16', 44100, 2], ['L16', 44100, 1],
];

export async function startLinphone(o: LinphoneOptions): Promise<Linphone> {
  if (!existsSync('/usr/bin/linphonec')) throw new Error('linphonec is not installed (apt-get install linphone-cli; npm test installs it)');
  const dir = tempDir('linphone-');
  mkdirSync(join(dir, '.local/share/linphone'), { recursive: true });
  const user = o.user ?? 'linphone';
  const srtp = o.srtp ?? 'off';
  const rc = join(dir, 'linphonerc');
  const logFile = join(dir, 'linphonec.log');
  // The wanted ones first, in order and enabled; every other one listed disabled.
  const wanted = o.codecs ?? ['PCMU'];
  const ordered = [...wanted.map((w) => ALL_CODECS.find(([m]) => m === w)!), ...ALL_CODECS.filter(([m]) => !wanted.includes(m as 'PCMU'))];
  const codecs = ordered.map(([mime, rate, channels], i) => `[audio_codec_${i}]\nmime=${mime}\nrate=${rate}\nchannels=${channels}\nenabled=${wanted.includes(mime as 'PCMU') ? 1 : 0}\n`);
  writeFileSync(rc, [
    '[sip]',
    'auto_net_state_mon=0',
    `sip_port=${o.sipPort}`,
    'sip_tcp_port=0',
    'sip_tls_port=0',
    'bind_address=127.0.0.1',
    'guess_hostname=0',
    `contact=sip:${user}@127.0.0.1:${o.sipPort}`,
    'use_ipv6=0',
    'use_rfc2833=1',
    'use_info=0',
    `media_encryption=${srtp === 'off' ? 'none' : 'srtp'}`,
    `media_encryption_mandatory=${srtp === 'mandatory' ? 1 : 0}`,
    'inc_timeout=60',
    '',
    '[rtp]',
    `audio_rtp_port=${o.rtpPorts[0]}-${o.rtpPorts[1]}`,
    'bind_address=127.0.0.1',
    '',
    '[sound]',
    'echocancellation=0',
    '',
    '[video]',
    'capture=0',
    'display=0',
    'automatically_initiate=0',
    'automatically_accept=0',
    '',
    ...codecs,
  ].join('\n'));

  const proc: ChildProcess = spawn('linphonec', ['-c', rc, '-d', '6', '-l', logFile, ...(o.autoAnswer ? ['-a'] : [])], {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir, LANG: 'C' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (d: Buffer) => { out += d.toString(); for (const w of [...waiters]) w(); };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  proc.stdin!.on('error', () => undefined);
  const exited = new Promise<void>((r) => proc.once('exit', () => { for (const w of [...waiters]) w(); r(); }));

  const readLog = () => { try { return readFileSync(logFile, 'utf8'); } catch { return ''; } };
  const sipMessages = (): LinphoneSipMessage[] => {
    const msgs: LinphoneSipMessage[] = [];
    // belle-sip: "…: message sent to [UDP://a:p], size: [n] bytes" or "…: received [n] new bytes
    // from [UDP://a:p]:", then the message, up to the next timestamped log line.
    const re = /(message sent to|received \[\d+\] new bytes from) \[([^\]]+)\][^\n]*\n([^]*?)(?=^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d|$(?![^]))/gm;
    for (const m of readLog().matchAll(re)) {
      const text = m[3].replace(/\r/g, '').trim();
      msgs.push({ direction: m[1].startsWith('message sent') ? 'sent' : 'received', peer: m[2], startLine: text.split('\n')[0], text });
    }
    return msgs;
  };

  const l: Linphone = {
    uri: `sip:${user}@127.0.0.1:${o.sipPort}`,
    dir,
    send(line) { proc.stdin!.write(`${line}\n`); },
    mark: () => out.length,
    async waitFor(re, timeoutMs, from = 0) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const m = out.slice(from).match(re);
        if (m) return m;
        const left = end - Date.now();
        if (left <= 0 || proc.exitCode !== null || proc.signalCode !== null) {
          throw new Error(`linphonec: no ${re} within ${timeoutMs} ms${proc.exitCode !== null ? ` (it exited ${proc.exitCode})` : ''}; stdout since: ${JSON.stringify(out.slice(from).slice(-1500))}`);
        }
        await new Promise<void>((r) => { const w = () => { clearTimeout(t); waiters.delete(w); r(); }; const t = setTimeout(w, left); waiters.add(w); });
      }
    },
    async recordTo(path) {
      const at = out.length;
      l.send(`record ${path}`);
      // Echoed after the prompt; the next prompt means it was handled.
      await l.waitFor(new RegExp(`record ${path.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}\\n(?:[^]*?)linphonec> `), 5000, at);
    },
    stdout: () => out,
    sipMessages,
    output() {
      const sip = sipMessages().slice(-6).map((m) => `--- ${m.direction} ${m.peer}\n${m.text}`).join('\n');
      return `linphonec stdout:\n${out.slice(-2000)}\nlinphonec SIP (last messages):\n${sip.slice(-6000)}`;
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
    },
  };

  try {
    await l.waitFor(/linphonec> /, 10_000);
    let at = l.mark();
    l.send('soundcard use files');
    await l.waitFor(/Using wav files instead of soundcard\./, 5000, at);
    at = l.mark();
    l.send(`play ${o.playWav}`);
    await l.waitFor(/play [^\n]*\n(?:[^]*?)linphonec> /, 5000, at);
    // Bound and listening (its core started: see the database note above).
    const end = Date.now() + 10_000;
    while (!readLog().includes(`Creating listening point`) || !readLog().includes(`127.0.0.1:${o.sipPort};transport=UDP`)) {
      if (Date.now() > end) throw new Error(`linphonec is not listening on ${o.sipPort}: ${readLog().split('\n').filter((x) => /error/i.test(x)).slice(-10).join('\n')}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    await l.stop();
    throw err;
  }
  return l;
}
