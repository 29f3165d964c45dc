import { GatewayClient, type Call } from '../sdk';

/** The demo phone at `/`: a thin UI over the SDK, with stable data-testid hooks for tests. */
const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = $('status');
const number = $<HTMLInputElement>('number');
const buttons = { call: $<HTMLButtonElement>('call'), hangup: $<HTMLButtonElement>('hangup'), mute: $<HTMLButtonElement>('mute'), hold: $<HTMLButtonElement>('hold'), callback: $<HTMLButtonElement>('callback') };
const incomingBox = $('incoming');
let client: GatewayClient | null = null;
let current: Call | null = null;
let ringing: Call | null = null;
let timer: number | undefined;
/** The connection dropped and the client is taking the call over on a new one. */
let reconnecting = false;
/** The call's audio is moving to a new peer connection (a media restart). */
let restartingMedia = false;
const AWAY = ' — reconnecting…';
const away = () => (reconnecting || restartingMedia ? AWAY : '');

declare global { interface Window { __gw: { client: GatewayClient | null; currentCall: Call | null } } }
window.__gw = { client: null, currentCall: null };

function setStatus(text: string): void { status.textContent = text; }
/** The status as it is, with ' — reconnecting…' after it while the link or the call's audio is coming back. */
function showAway(): void { setStatus(`${(status.textContent ?? '').replace(AWAY, '')}${away()}`); }
function fmt(sec: number): string { return `${String(Math.floor(sec / 60)).padStart(2, '0')}:${String(sec % 60).padStart(2, '0')}`; }

function track(call: Call): void {
  current = call;
  window.__gw.currentCall = call;
  buttons.call.disabled = true;
  buttons.hangup.disabled = false;
  call.on('progress', (p) => setStatus(p.earlyMedia ? 'ringing… (early media)' : 'ringing…'));
  call.on('answered', () => {
    buttons.mute.disabled = false; buttons.hold.disabled = false;
    const start = Date.now();
    setStatus('answered 00:00');
    timer = window.setInterval(() => setStatus(`answered ${fmt(Math.floor((Date.now() - start) / 1000))}${call.onHold ? ' (on hold)' : ''}${away()}`), 1000);
  });
  call.on('held', () => { buttons.hold.textContent = 'Resume'; buttons.hold.setAttribute('aria-pressed', 'true'); });
  call.on('resumed', () => { buttons.hold.textContent = 'Hold'; buttons.hold.setAttribute('aria-pressed', 'false'); });
  // The call goes on while its audio moves to a new connection: said after the status.
  call.on('mediaRestarting', () => { restartingMedia = true; showAway(); });
  call.on('mediaRestarted', () => { restartingMedia = false; showAway(); });
  call.on('mediaRestartFailed', () => { restartingMedia = false; showAway(); });
  call.on('ended', (e) => {
    window.clearInterval(timer);
    restartingMedia = false;
    setStatus(`ended (${e.cause}${e.sipStatus ? ` ${e.sipStatus}` : ''})`);
    buttons.call.disabled = false; buttons.hangup.disabled = true; buttons.mute.disabled = true; buttons.hold.disabled = true;
    buttons.mute.textContent = 'Mute'; buttons.hold.textContent = 'Hold';
    if (current === call) current = null;
  });
}

const pad = $('pad');
for (const d of ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#']) {
  const b = document.createElement('button');
  b.textContent = d;
  b.dataset.testid = `keypad-${d}`;
  b.setAttribute('aria-label', `digit ${d}`);
  b.onclick = () => { if (current?.state === 'answered') current.sendDigits(d); else number.value += d; };
  pad.append(b);
}

buttons.call.onclick = () => {
  if (!client || current) return;
  setStatus('calling…');
  track(client.call(number.value.trim()));
};
buttons.hangup.onclick = () => current?.hangup();
buttons.mute.onclick = () => {
  if (!current) return;
  current.mute(!current.muted);
  buttons.mute.textContent = current.muted ? 'Unmute' : 'Mute';
  buttons.mute.setAttribute('aria-pressed', String(current.muted));
};
buttons.hold.onclick = () => { if (current) { if (current.onHold) current.unhold(); else current.hold(); } };
buttons.callback.onclick = async () => {
  if (!client) return;
  const r = await fetch('/api/demo/callback', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sessionId: client.sessionId }) });
  if (!r.ok) setStatus(`call me back failed: ${(await r.json().catch(() => ({}))).error ?? r.status}`);
};
$('accept').onclick = async () => {
  const call = ringing;
  if (!call) return;
  ringing = null; incomingBox.classList.remove('ringing');
  track(call);
  setStatus('connecting…');
  try { await call.accept(); } catch (e) { setStatus(`could not answer: ${(e as Error).message}`); }
};
$('reject').onclick = () => { ringing?.reject(); ringing = null; incomingBox.classList.remove('ringing'); };

(async () => {
  try {
    const token = new URLSearchParams(location.search).get('token') ?? undefined;
    client = await GatewayClient.connect({ token });
    window.__gw.client = client;
    setStatus(`ready (${client.identity})`);
    client.on('incoming', (call) => {
      if (current || ringing) { call.reject('busy'); return; }
      ringing = call;
      $('incoming-from').textContent = `Incoming call from ${call.fromName ?? call.from ?? 'unknown'}`;
      incomingBox.classList.add('ringing');
      setStatus('incoming call: ringing…');
      call.on('ended', (e) => {
        if (ringing === call) { ringing = null; incomingBox.classList.remove('ringing'); setStatus(`ended (${e.cause})`); }
      });
    });
    // The call goes on while the link comes back: said after the status (the timer keeps it).
    client.on('reconnecting', () => { reconnecting = true; showAway(); });
    client.on('reconnected', ({ resumed }) => {
      reconnecting = false;
      // A new session (the gateway restarted, or the link was away too long): ready again for
      // calls; how a call of the old session ended stays in view before it.
      if (!resumed && !current && !ringing) {
        const last = (status.textContent ?? '').replace(AWAY, '');
        setStatus(last.startsWith('ended') ? `${last} — ready (${client!.identity})` : `ready (${client!.identity})`);
      } else showAway();
    });
    // Keep what ended the call (e.g. "ended (shutdown)") visible; add that the link is gone.
    client.on('disconnected', () => {
      reconnecting = false;
      setStatus(`${status.textContent?.startsWith('ended') ? status.textContent : 'ended'} — disconnected from the gateway`);
    });
  } catch (e) {
    setStatus(`cannot reach the gateway: ${(e as Error).message}`);
  }
})();
