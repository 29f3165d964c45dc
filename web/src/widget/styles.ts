/**
 * The widget's stylesheet, scoped by its Shadow DOM. Host pages theme it only through these
 * custom properties, set on the `gateway-call-widget` element:
 *   --gw-accent, --gw-accent-text, --gw-danger, --gw-bg, --gw-text, --gw-radius, --gw-font
 */
export function widgetCss(inline: boolean): string {
  return `
:host {
  all: initial;
  ${inline ? 'display: inline-block;' : 'position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;'}
  font-family: var(--gw-font, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif);
  font-size: 15px;
  color: var(--gw-text, #1d2330);
}
.gw { display: flex; flex-direction: column; align-items: flex-end; gap: 8px; }
button {
  font: inherit; cursor: pointer; border: 0; border-radius: var(--gw-radius, 999px);
  padding: 10px 18px; background: var(--gw-bg, #fff); color: var(--gw-text, #1d2330);
  box-shadow: 0 1px 3px rgba(0,0,0,.25);
}
button:focus-visible { outline: 3px solid var(--gw-accent, #0b6bcb); outline-offset: 2px; }
button:disabled { opacity: .6; cursor: progress; }
.main { background: var(--gw-accent, #0b6bcb); color: var(--gw-accent-text, #fff); font-weight: 600; }
.panel {
  background: var(--gw-bg, #fff); border-radius: 14px; padding: 12px; min-width: 250px;
  box-shadow: 0 4px 18px rgba(0,0,0,.22); display: flex; flex-direction: column; gap: 10px;
}
.panel[hidden], .keypad[hidden], .message[hidden], .main[hidden] { display: none; }
.row { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
.status { font-weight: 600; }
.timer { font-variant-numeric: tabular-nums; }
.controls button { padding: 8px 12px; }
.mute[aria-pressed="true"] { background: var(--gw-accent, #0b6bcb); color: var(--gw-accent-text, #fff); }
.hangup { background: var(--gw-danger, #c62828); color: #fff; }
.keypad { display: grid; grid-template-columns: repeat(3, 1fr); gap: 6px; }
.keypad button { border-radius: 8px; padding: 10px 0; }
.message {
  margin: 0; max-width: 280px; background: var(--gw-bg, #fff); border-radius: 10px;
  padding: 8px 12px; box-shadow: 0 1px 3px rgba(0,0,0,.25);
}
`;
}
