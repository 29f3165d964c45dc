/**
 * The embeddable call widget: one script tag on any site draws a call button and, during a call,
 * a small panel (status, timer, mute, keypad, hang up).
 *
 *   <script src="https://gateway.example/widget.js" data-token-url="/call-token" data-label="Call us" async></script>
 *
 * The site's backend mints the token (docs/tokens.md); the token fixes who is called, so nothing
 * a visitor can edit on the page changes the destination. Everything lives in a Shadow DOM so
 * the host page's CSS and ours never meet; the host page themes it through CSS custom
 * properties on the widget element (--gw-accent, --gw-accent-text, --gw-bg, --gw-text,
 * --gw-radius, --gw-font).
 */
import { GatewayClient } from '../sdk/client';
import type { Call, CallEndInfo, EndCause } from '../sdk/call';
import { widgetCss } from './styles';

interface WidgetOptions {
  gatewayOrigin: string;
  tokenUrl: string;
  label: string;
  inline: boolean;
}

type View = 'idle' | 'starting' | 'in-call' | 'message';

const END_MESSAGES: Partial<Record<EndCause, string>> = {
  busy: 'The line is busy. Please try again later.',
  'no-answer': 'No one answered. Please try again later.',
  rejected: 'The call was declined.',
  'not-found': 'This number cannot be reached.',
  unavailable: 'The line is unavailable right now.',
  forbidden: 'This call is not allowed.',
  'remote-hangup': 'Call ended.',
  'local-hangup': 'Call ended.',
  cancelled: 'Call cancelled.',
  'media-timeout': 'The call was lost (no audio).',
  'connection-lost': 'The connection was lost. Please call again.',
  'ice-failed': 'Your network blocked the call audio.',
  shutdown: 'The service is restarting. Please call again in a moment.',
  transferred: 'The call was transferred.',
};

/** By the code of the error that stopped the call (connecting, or the gateway refusing it). */
const CONNECT_MESSAGES: Record<string, string> = {
  'token-timeout': 'The call service did not respond in time. Please try again.',
  'token-expired': 'This page has been open too long. Reload it to call.',
  'rate-limited': 'Too many attempts. Please wait a moment and try again.',
  'too-many-calls': 'All lines are busy. Please try again shortly.',
  draining: 'The service is restarting. Please call again in a moment.',
};
const UNAVAILABLE = 'Calling is unavailable right now. Please try again later.';
/** The site's token endpoint gets this long; a hung backend must not leave the widget stuck on "Connecting…". */
const TOKEN_TIMEOUT_MS = 10_000;

class CallWidget {
  private readonly root: ShadowRoot;
  private readonly el: Record<'main' | 'panel' | 'status' | 'timer' | 'mute' | 'keypadToggle' | 'keypad' | 'hangup' | 'message', HTMLElement>;
  private client: GatewayClient | null = null;
  private call: Call | null = null;
  private answeredAt = 0;
  private ticker: ReturnType<typeof setInterval> | null = null;
  /** The call's own status, shown again once a dropped connection is back. */
  private statusText = '';
  private reconnecting = false;
  /** The call's audio is moving to a new peer connection (a media restart). */
  private restartingMedia = false;

  constructor(readonly host: HTMLElement, private readonly o: WidgetOptions) {
    this.root = host.attachShadow({ mode: 'open' });
    const style = document.createElement('style');
    style.textContent = widgetCss(o.inline);
    const wrap = document.createElement('div');
    wrap.className = 'gw';
    wrap.innerHTML = `
      <button class="main" part="button" data-testid="widget-call" type="button"></button>
      <div class="panel" role="group" aria-label="Call controls" hidden>
        <div class="row"><span class="status" data-testid="widget-status" role="status" aria-live="polite"></span><span class="timer" data-testid="widget-timer" aria-label="Call duration">0:00</span></div>
        <div class="row controls">
          <button type="button" class="mute" data-testid="widget-mute" aria-pressed="false">Mute</button>
          <button type="button" class="keypad-toggle" data-testid="widget-keypad-toggle" aria-expanded="false" aria-controls="gw-keypad">Keypad</button>
          <button type="button" class="hangup" data-testid="widget-hangup">Hang up</button>
        </div>
        <div class="keypad" id="gw-keypad" role="group" aria-label="Keypad" hidden></div>
      </div>
      <p class="message" data-testid="widget-message" role="alert" hidden></p>`;
    this.root.append(style, wrap);
    const q = (s: string) => wrap.querySelector(s) as HTMLElement;
    this.el = { main: q('.main'), panel: q('.panel'), status: q('.status'), timer: q('.timer'), mute: q('.mute'), keypadToggle: q('.keypad-toggle'), keypad: q('.keypad'), hangup: q('.hangup'), message: q('.message') };
    this.el.main.textContent = o.label;
    this.el.main.setAttribute('aria-label', o.label);
    for (const d of ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#']) {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = d;
      b.dataset.testid = `widget-key-${d}`;
      b.setAttribute('aria-label', `Key ${d}`);
      b.addEventListener('click', () => this.call?.sendDigits(d));
      this.el.keypad.append(b);
    }
    this.el.main.addEventListener('click', () => void this.start());
    this.el.hangup.addEventListener('click', () => this.call?.hangup());
    this.el.mute.addEventListener('click', () => this.toggleMute());
    this.el.keypadToggle.addEventListener('click', () => this.toggleKeypad());
    // Typing digits while the keypad is open sends them; Escape closes the keypad.
    this.el.panel.addEventListener('keydown', (e) => {
      if (e.key === 'Escape' && !this.el.keypad.hidden) { this.toggleKeypad(); this.el.keypadToggle.focus(); }
      else if (!this.el.keypad.hidden && /^[0-9*#]$/.test(e.key)) this.call?.sendDigits(e.key);
    });
    this.show('idle');
  }

  /** For tests and integrators who want the raw call (remote stream, stats). */
  get currentCall(): Call | null {
    return this.call;
  }

  private async start(): Promise<void> {
    if (this.call) return;
    const unsupported = unsupportedReason();
    if (unsupported) { this.show('message', unsupported); return; }
    this.show('starting', 'Connecting…');
    // Ask for the microphone first, so a refusal reads as a refusal and not as a failed call.
    try {
      const probe = await navigator.mediaDevices.getUserMedia({ audio: true });
      for (const t of probe.getTracks()) t.stop();
    } catch (err) {
      const name = (err as DOMException).name;
      this.show('message', name === 'NotAllowedError' || name === 'SecurityError'
        ? 'Microphone access was blocked. Allow the microphone for this site to call.'
        : 'No microphone was found. Connect one to call.');
      return;
    }
    try {
      if (!this.client) this.client = await this.connect();
    } catch (err) {
      const code = (err as { code?: string }).code ?? '';
      console.warn('call widget: cannot connect:', (err as Error).message);
      this.show('message', CONNECT_MESSAGES[code] ?? UNAVAILABLE);
      return;
    }
    const call = this.client.call();
    this.call = call;
    this.restartingMedia = false;
    this.show('in-call', 'Calling…');
    call.on('progress', () => this.setStatus('Ringing…'));
    call.on('answered', () => {
      this.answeredAt = Date.now();
      this.setStatus('Connected');
      this.ticker = setInterval(() => this.renderTimer(), 1000);
    });
    call.on('held', (by) => this.setStatus(by === 'remote' ? 'On hold' : 'Connected'));
    call.on('resumed', () => this.setStatus('Connected'));
    // Those that end the call (a refused request) are explained by onEnded; the others (a
    // refused digit) change nothing the visitor sees.
    call.on('error', (e) => console.warn(`call widget: the gateway refused ${e.request ?? 'a request'}: ${e.code}: ${e.message}`));
    call.on('ended', (info) => this.onEnded(info));
    // Its audio moving to a new connection (the network changed): shown as a reconnection.
    call.on('mediaRestarting', () => this.setRestartingMedia(true));
    call.on('mediaRestarted', () => this.setRestartingMedia(false));
    call.on('mediaRestartFailed', () => this.setRestartingMedia(false));
  }

  private async connect(): Promise<GatewayClient> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TOKEN_TIMEOUT_MS);
    let text: string;
    try {
      const res = await fetch(this.o.tokenUrl, { credentials: 'include', headers: { Accept: 'application/json, text/plain' }, signal: abort.signal });
      if (!res.ok) throw new Error(`token endpoint answered ${res.status}`);
      text = (await res.text()).trim(); // the body too: a backend may stall half-way
    } catch (err) {
      if (!abort.signal.aborted) throw err;
      throw Object.assign(new Error(`token endpoint did not answer within ${TOKEN_TIMEOUT_MS / 1000} s`), { code: 'token-timeout' });
    } finally {
      clearTimeout(timer);
    }
    let token = text;
    if (text.startsWith('{')) token = String((JSON.parse(text) as { token?: unknown }).token ?? '');
    if (!token) throw new Error('token endpoint returned no token');
    const wsOrigin = this.o.gatewayOrigin.replace(/^http/, 'ws');
    // Only for its calls: an idle widget need not stay connected (a click connects again).
    const client = await GatewayClient.connect({ url: `${wsOrigin}/ws`, token, stayConnected: false });
    // The token inside is short-lived: a new click after a drop fetches a fresh one.
    client.on('disconnected', () => { this.client = null; this.setReconnecting(false); });
    // A dropped connection during the call: the call goes on while the SDK takes it over.
    client.on('reconnecting', () => this.setReconnecting(true));
    client.on('reconnected', () => this.setReconnecting(false));
    return client;
  }

  private onEnded({ cause, sipReason, error }: CallEndInfo): void {
    if (this.ticker) clearInterval(this.ticker);
    this.ticker = null;
    this.call = null;
    this.restartingMedia = false;
    this.renderTimer();
    if (cause === 'failed' && sipReason === 'microphone permission denied') {
      this.show('message', 'Microphone access was blocked. Allow the microphone for this site to call.');
    } else if (error && CONNECT_MESSAGES[error.code]) {
      // The gateway refused the call (limits, restarting): say so, with how long to wait.
      this.show('message', CONNECT_MESSAGES[error.code] + (error.retryAfterMs ? ` (${Math.ceil(error.retryAfterMs / 1000)} s)` : ''));
    } else {
      this.show('message', END_MESSAGES[cause] ?? UNAVAILABLE);
    }
    this.host.dataset.lastCause = cause;
  }

  private toggleMute(): void {
    if (!this.call) return;
    const on = !this.call.muted;
    this.call.mute(on);
    this.el.mute.setAttribute('aria-pressed', String(on));
    this.el.mute.textContent = on ? 'Unmute' : 'Mute';
  }

  private toggleKeypad(): void {
    const open = this.el.keypad.hidden;
    this.el.keypad.hidden = !open;
    this.el.keypadToggle.setAttribute('aria-expanded', String(open));
  }

  private renderTimer(): void {
    const s = this.answeredAt ? Math.floor((Date.now() - this.answeredAt) / 1000) : 0;
    this.el.timer.textContent = `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
  }

  private setStatus(text: string): void {
    this.statusText = text;
    const shown = this.reconnecting || this.restartingMedia ? 'Reconnecting…' : text;
    this.el.status.textContent = shown;
    this.host.dataset.state = shown;
  }

  private setReconnecting(on: boolean): void {
    this.reconnecting = on;
    this.setStatus(this.statusText);
  }

  private setRestartingMedia(on: boolean): void {
    this.restartingMedia = on;
    this.setStatus(this.statusText);
  }

  private show(view: View, text = ''): void {
    this.el.panel.hidden = view !== 'in-call';
    this.el.main.hidden = view === 'in-call';
    (this.el.main as HTMLButtonElement).disabled = view === 'starting';
    this.el.message.hidden = view !== 'message' && view !== 'starting';
    this.el.message.textContent = view === 'message' || view === 'starting' ? text : '';
    if (view === 'in-call') {
      this.setStatus(text);
      this.answeredAt = 0;
      this.renderTimer();
      this.el.mute.setAttribute('aria-pressed', 'false');
      this.el.mute.textContent = 'Mute';
      this.el.keypad.hidden = true;
      this.el.keypadToggle.setAttribute('aria-expanded', 'false');
      this.el.hangup.focus();
    } else if (view === 'message' && this.root.activeElement) {
      this.el.main.focus();
    }
  }
}

function unsupportedReason(): string | null {
  if (!window.isSecureContext) return 'Calling needs a secure (https) page.';
  if (typeof RTCPeerConnection === 'undefined' || !navigator.mediaDevices?.getUserMedia || typeof WebSocket === 'undefined') {
    return 'This browser cannot place calls. Please use a current Chrome, Edge, Firefox or Safari.';
  }
  return null;
}

/** Finds our own <script> tag (async scripts still have currentScript while they run). */
function ownScript(): HTMLScriptElement | null {
  const cur = document.currentScript as HTMLScriptElement | null;
  if (cur?.src) return cur;
  const all = Array.from(document.querySelectorAll<HTMLScriptElement>('script[src][data-token-url]'));
  return all.find((s) => /\/widget\.js(\?|$)/.test(s.src)) ?? null;
}

// Captured while this script runs: currentScript is gone by DOMContentLoaded.
const SCRIPT = ownScript();

function mount(): void {
  const script = SCRIPT;
  if (!script) { console.error('call widget: cannot find its <script> tag'); return; }
  const tokenUrl = script.dataset.tokenUrl;
  if (!tokenUrl) { console.error('call widget: data-token-url is required on the <script> tag'); return; }
  const host = document.createElement('gateway-call-widget');
  const inline = script.dataset.position === 'inline';
  const widget = new CallWidget(host, {
    gatewayOrigin: new URL(script.src, location.href).origin,
    tokenUrl: new URL(tokenUrl, location.href).href,
    label: script.dataset.label || 'Call us',
    inline,
  });
  Object.defineProperty(host, 'currentCall', { get: () => widget.currentCall });
  if (inline) script.insertAdjacentElement('beforebegin', host);
  else document.body.append(host);
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', mount, { once: true });
else mount();
