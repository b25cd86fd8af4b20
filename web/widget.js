/*
 * kefu chat widget: one tag on any page,
 *
 *   <script src="https://HOST/widget.js" data-site="WIDGET_KEY" async></script>
 *
 * adds a launcher bubble and a chat panel inside a shadow root (the host page's CSS does
 * not reach in, ours does not leak out). With data-mode="page" (what /chat?site=KEY uses)
 * the panel fills the page instead and the key may come from the URL.
 *
 * Guarantees, in the order the code below keeps them:
 * - The visitor token lives in localStorage: a reload resumes the same visitor and
 *   conversation, and `resume` from the last seen seq fills in anything missed.
 * - Every send carries a client_msg_id and stays in an outbox (also in localStorage)
 *   until its message.ack arrives; it is resent after a reconnect or a silence, and the
 *   server answers a resend with the original message. Messages are keyed by seq, so
 *   nothing is shown twice.
 * - When WebSocket cannot connect at all, the same frames go over HTTP long-polling
 *   (/api/visitor/*), with the same acks and the same resume-by-seq.
 * - Everything anyone wrote is put on screen with textContent, never parsed as HTML.
 *
 * Public API for the host page (see README.md, "Widget JavaScript API"): window.kefu
 *   kefu.open() / kefu.close()
 *   kefu.setUser({user_id, user_hash, name, email})   identity verification: the same
 *       visitor on every device; user_hash = hex HMAC-SHA256(site identity secret, user_id)
 *   kefu.setAttributes({plan: 'pro', …})             custom attributes agents see
 *   kefu.on(event, fn) / kefu.off(event, fn)         'ready', 'open', 'close',
 *       'message' (a message received from the team), 'unread' (count of unread messages)
 *   kefu.reset()                                     forget the visitor (e.g. on logout)
 * Calls made before this script has loaded are queued by the snippet
 *   window.kefu = window.kefu || function () { (kefu.q = kefu.q || []).push(arguments); };
 *   kefu('setUser', {...}); kefu('on', 'message', fn);
 * and run when it loads. The same user may also come as data-user-id, data-user-hash,
 * data-user-name, data-user-email attributes on the <script> tag. window.Kefu (open,
 * close, identify) stays for pages written against the first version.
 */
(function () {
  'use strict';

  const script = document.currentScript;
  if (!script) return;
  const BASE = new URL(script.src, location.href).origin;
  const PAGE_MODE = script.dataset.mode === 'page';
  const SITE = script.dataset.site || new URLSearchParams(location.search).get('site') || '';
  if (!SITE) {
    console.warn('kefu: the widget <script> needs data-site="WIDGET_KEY"');
    return;
  }
  const loaded = (window.__kefuLoaded = window.__kefuLoaded || {});
  if (loaded[SITE]) return; // the tag was added twice
  loaded[SITE] = true;

  // -------------------------------------------------------------------------------------
  // Tunables
  // -------------------------------------------------------------------------------------
  const RESEND_AFTER_MS = 8000; // an unacknowledged send is repeated after this
  const KEEPALIVE_MS = 15000; // app-level ping while connected
  const DEAD_AFTER_MS = 40000; // no frame at all for this long: the socket is dead
  const BACKOFF_MAX_MS = 15000;
  const WS_FAILS_BEFORE_POLLING = 3; // sockets that never opened before trying HTTP
  const TYPING_IDLE_MS = 4000; // our typing "off" after this long without a key
  const THEIR_TYPING_MS = 6000; // their typing indicator hides after this long
  const MAX_BODY = 4000;

  // -------------------------------------------------------------------------------------
  // Storage (localStorage can throw: private modes, sandboxed frames)
  // -------------------------------------------------------------------------------------
  const store = {
    key: (k) => 'kefu:' + SITE + ':' + k,
    get(k) {
      try {
        const v = localStorage.getItem(this.key(k));
        return v === null ? null : JSON.parse(v);
      } catch (_) {
        return null;
      }
    },
    set(k, v) {
      try {
        localStorage.setItem(this.key(k), JSON.stringify(v));
      } catch (_) { /* storage full or refused: keep going in memory */ }
    },
  };

  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return 'w-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  // -------------------------------------------------------------------------------------
  // State
  // -------------------------------------------------------------------------------------
  const state = {
    token: store.get('token'),
    config: null, // GET /api/config
    siteName: '',
    greeting: '',
    offlineMessage: '',
    agentsOnline: null,
    visitor: null,
    conversation: null,
    bySeq: new Map(), // seq -> message (confirmed, visitor-visible)
    lastSeq: 0,
    readSeq: 0, // highest seq the visitor has had on screen
    sentReadSeq: 0,
    agentReadSeq: 0, // highest seq the agents have read
    outbox: Array.isArray(store.get('outbox')) ? store.get('outbox') : [],
    open: PAGE_MODE || store.get('open') === true,
    ready: false, // welcome received on the current transport
    theirTyping: false,
    profile: null, // identify() data waiting for a connection
    attributesSent: '',
    user: null, // {user_id, user_hash}: identity verification, sent when connecting
    withinHours: true, // false outside the site's business hours
    nextOpenAt: null,
    rating: { sent: 0, closed: false, commentSent: false }, // CSAT prompt state
  };
  // Host-page event listeners (kefu.on / kefu.off). A throwing listener must not break chat.
  const api = {
    listeners: new Map(),
    emit(event, detail) {
      for (const fn of [...(this.listeners.get(event) || [])]) {
        try { fn(detail); } catch (e) { console.error('kefu: a "' + event + '" listener failed', e); }
      }
    },
  };

  const savedRead = store.get('read');
  if (savedRead && typeof savedRead.seq === 'number') state.readSeq = savedRead.seq;

  function saveOutbox() {
    store.set('outbox', state.outbox.map((e) => ({ id: e.id, body: e.body, at: e.at, attachments: e.attachments })));
  }

  // -------------------------------------------------------------------------------------
  // DOM helpers: text only
  // -------------------------------------------------------------------------------------
  function el(tag, props, children) {
    const node = document.createElement(tag);
    if (props) {
      for (const [k, v] of Object.entries(props)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'text') node.textContent = v;
        else if (k === 'class') node.className = v;
        else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
        else node.setAttribute(k, v === true ? '' : v);
      }
    }
    for (const c of children || []) if (c) node.append(c);
    return node;
  }

  const SVG_NS = 'http://www.w3.org/2000/svg';
  function icon(paths, size) {
    const svg = document.createElementNS(SVG_NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('width', String(size || 24));
    svg.setAttribute('height', String(size || 24));
    svg.setAttribute('aria-hidden', 'true');
    svg.setAttribute('focusable', 'false');
    for (const d of paths) {
      const p = document.createElementNS(SVG_NS, 'path');
      p.setAttribute('d', d);
      svg.append(p);
    }
    return svg;
  }
  const ICON_CHAT = ['M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H8.5L4 21.5V18a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2Z'];
  const ICON_CLOSE = ['M6.4 5 12 10.6 17.6 5 19 6.4 13.4 12l5.6 5.6-1.4 1.4-5.6-5.6L6.4 19 5 17.6l5.6-5.6L5 6.4Z'];
  const ICON_CHEVRON = ['M7.4 8.6 12 13.2l4.6-4.6L18 10l-6 6-6-6Z'];
  const ICON_SEND = ['M3.4 20.4 21 12 3.4 3.6 3.4 10.1 15 12 3.4 13.9Z'];

  function timeOf(iso) {
    const d = new Date(iso);
    return isNaN(d) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  // -------------------------------------------------------------------------------------
  // Styles (a constructed stylesheet: no inline <style>, so strict CSPs allow it)
  // -------------------------------------------------------------------------------------
  const CSS = `
:host { all: initial; }
.root {
  --kefu-primary: #2563eb;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif;
  color: #111827;
  -webkit-font-smoothing: antialiased;
}
*, *::before, *::after { box-sizing: border-box; }
[hidden] { display: none !important; }
button { font: inherit; }
.sr-only {
  position: absolute; width: 1px; height: 1px; padding: 0; margin: -1px;
  overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; border: 0;
}
.launcher {
  position: fixed; right: 20px; bottom: 20px; z-index: 2147483000;
  width: 58px; height: 58px; border-radius: 50%; border: 0; padding: 0;
  background: var(--kefu-primary); color: #fff; cursor: pointer;
  display: flex; align-items: center; justify-content: center;
  box-shadow: 0 6px 20px rgba(17, 24, 39, .25);
  transition: transform .15s ease;
}
.launcher:hover { transform: scale(1.06); }
.launcher svg { fill: currentColor; }
.badge {
  position: absolute; top: -3px; right: -3px; min-width: 22px; height: 22px; padding: 0 6px;
  border-radius: 11px; border: 2px solid #fff; background: #ef4444; color: #fff;
  font-size: 12px; font-weight: 700; line-height: 18px; text-align: center;
}
.panel {
  position: fixed; right: 20px; bottom: 92px; z-index: 2147483000;
  width: 372px; height: min(640px, calc(100vh - 116px));
  display: flex; flex-direction: column; overflow: hidden;
  background: #fff; border-radius: 16px;
  box-shadow: 0 16px 48px rgba(17, 24, 39, .22), 0 2px 6px rgba(17, 24, 39, .08);
}
.page .panel {
  inset: 0; width: auto; height: auto; border-radius: 0; box-shadow: none;
}
@media (min-width: 720px) {
  .page .panel { left: 50%; right: auto; width: 680px; transform: translateX(-50%);
    border-left: 1px solid #e5e7eb; border-right: 1px solid #e5e7eb; }
}
@media (max-width: 480px) {
  .bubble-mode .panel { inset: 0; width: auto; height: auto; border-radius: 0; }
  .bubble-mode.open .launcher { display: none; }
  textarea { font-size: 16px !important; }
}
.head {
  display: flex; align-items: center; gap: 12px; padding: 14px 14px 14px 16px;
  background: var(--kefu-primary); color: #fff; flex: none;
}
.avatar {
  width: 38px; height: 38px; border-radius: 50%; flex: none;
  display: flex; align-items: center; justify-content: center;
  background: rgba(255, 255, 255, .22); font-weight: 700; font-size: 16px; text-transform: uppercase;
}
.titles { min-width: 0; flex: 1; }
.name { font-weight: 700; font-size: 15px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.sub { font-size: 12.5px; opacity: .92; display: flex; align-items: center; gap: 6px; }
.dot { width: 8px; height: 8px; border-radius: 50%; background: #9ca3af; flex: none; }
.dot.on { background: #4ade80; }
.close {
  flex: none; width: 34px; height: 34px; border-radius: 8px; border: 0; padding: 0;
  background: transparent; color: #fff; cursor: pointer;
  display: flex; align-items: center; justify-content: center;
}
.close:hover { background: rgba(255, 255, 255, .16); }
.close svg { fill: currentColor; }
.banner { flex: none; padding: 10px 16px; font-size: 13px; background: #fffbeb; color: #92400e; border-bottom: 1px solid #fde68a; }
.conn { flex: none; padding: 4px 16px; font-size: 12px; text-align: center; background: #f3f4f6; color: #4b5563; }
.scroll { flex: 1; overflow-y: auto; padding: 16px 14px 6px; background: #f9fafb; overscroll-behavior: contain; }
ol { list-style: none; margin: 0; padding: 0; }
.msg { display: flex; flex-direction: column; align-items: flex-start; margin: 2px 0; }
.msg.mine { align-items: flex-end; }
.who { font-size: 12px; color: #6b7280; margin: 10px 4px 2px; }
.bubble {
  max-width: 82%; padding: 8px 12px; border-radius: 16px;
  white-space: pre-wrap; overflow-wrap: anywhere; word-break: break-word;
}
.theirs .bubble { background: #fff; border: 1px solid #e5e7eb; border-bottom-left-radius: 5px; }
.mine .bubble { background: var(--kefu-primary); color: #fff; border-bottom-right-radius: 5px; }
.msg.system { align-items: center; }
.system .bubble { background: transparent; color: #6b7280; font-size: 12px; text-align: center; padding: 4px 8px; }
.greeting .bubble { background: #fff; border: 1px solid #e5e7eb; border-bottom-left-radius: 5px; }
.meta { font-size: 11px; color: #9ca3af; margin: 2px 6px 4px; }
.pending .bubble { opacity: .65; }
.failed .bubble { background: #fee2e2; color: #991b1b; }
.retry { border: 0; background: none; color: #b91c1c; text-decoration: underline; cursor: pointer; padding: 0; font-size: 11px; }
.typing { flex: none; min-height: 22px; padding: 2px 18px 4px; font-size: 12px; color: #6b7280; background: #f9fafb; display: flex; align-items: center; gap: 6px; }
.dots { display: inline-flex; gap: 3px; }
.dots i { width: 5px; height: 5px; border-radius: 50%; background: #9ca3af; animation: kefu-blink 1.2s infinite ease-in-out; }
.dots i:nth-child(2) { animation-delay: .2s; }
.dots i:nth-child(3) { animation-delay: .4s; }
@keyframes kefu-blink { 0%, 80%, 100% { opacity: .3; } 40% { opacity: 1; } }
.rate { flex: none; padding: 10px 16px; border-top: 1px solid #e5e7eb; background: #fff; font-size: 13px; display: flex; align-items: center; gap: 8px; flex-wrap: wrap; }
.rate button { border: 1px solid #d1d5db; background: #fff; border-radius: 8px; width: 34px; height: 30px; cursor: pointer; color: #f59e0b; font-size: 16px; }
.rate button:hover { background: #fffbeb; }
.rate button.star[aria-pressed="true"] { background: #fef3c7; border-color: #f59e0b; }
.rate .rate-title { width: 100%; }
.rate .rate-comment { flex: 1 1 100%; height: 54px; max-height: 54px; font-size: 13px; }
.rate .rate-send, .ask button { width: auto; height: 30px; padding: 0 12px; border: 0; border-radius: 8px; background: var(--kefu-primary); color: #fff; font-size: 13px; cursor: pointer; }
.rate .rate-send:disabled { opacity: .5; cursor: default; }
.ask { flex: none; display: flex; flex-wrap: wrap; gap: 6px 8px; align-items: center; padding: 10px 16px; font-size: 13px; background: #fffbeb; border-bottom: 1px solid #fde68a; color: #92400e; }
.ask label { width: 100%; }
.ask input { flex: 1; min-width: 0; height: 30px; padding: 4px 8px; border: 1px solid #d1d5db; border-radius: 8px; font: inherit; }
.compose { flex: none; display: flex; align-items: flex-end; gap: 8px; padding: 10px 12px; border-top: 1px solid #e5e7eb; background: #fff; }
textarea {
  flex: 1; min-width: 0; resize: none; margin: 0; max-height: 132px; height: 40px;
  padding: 9px 12px; border: 1px solid #d1d5db; border-radius: 12px; outline: none;
  font: inherit; color: inherit; background: #fff; line-height: 20px;
}
textarea:focus { border-color: var(--kefu-primary); box-shadow: 0 0 0 3px rgba(37, 99, 235, .15); }
.send {
  flex: none; width: 40px; height: 40px; border-radius: 50%; border: 0; padding: 0;
  background: var(--kefu-primary); color: #fff; cursor: pointer;
  display: flex; align-items: center; justify-content: center;
}
.send svg { fill: currentColor; }
.send:disabled { opacity: .4; cursor: default; }
.brand { flex: none; text-align: center; font-size: 11px; color: #9ca3af; padding: 0 0 8px; background: #fff; }
button:focus-visible { outline: 2px solid #1d4ed8; outline-offset: 2px; }
textarea:focus-visible { outline: none; }
.teaser {
  position: fixed; right: 20px; bottom: 92px; z-index: 2147483000;
  max-width: min(300px, calc(100vw - 40px)); padding: 12px 14px; border: 0; border-radius: 14px;
  background: #fff; color: #111827; text-align: left; cursor: pointer;
  box-shadow: 0 10px 30px rgba(17, 24, 39, .2), 0 1px 3px rgba(17, 24, 39, .08);
  display: flex; flex-direction: column; gap: 3px; animation: kefu-rise .2s ease-out;
}
.teaser-who { font-size: 12px; font-weight: 700; color: var(--kefu-primary); }
.teaser-text {
  font-size: 14px; overflow: hidden; display: -webkit-box; -webkit-line-clamp: 3; -webkit-box-orient: vertical;
  white-space: pre-wrap; overflow-wrap: anywhere;
}
.open .teaser { display: none; }
@keyframes kefu-rise { from { opacity: 0; transform: translateY(8px); } to { opacity: 1; transform: none; } }
.launcher .when-open { display: none; }
.open .launcher .when-open { display: block; }
.open .launcher .when-closed { display: none; }
.attach {
  flex: none; width: 40px; height: 40px; border-radius: 50%; border: 0; padding: 0;
  background: transparent; color: #6b7280; cursor: pointer; font-size: 19px;
}
.attach:hover { background: #f3f4f6; }
.files { display: flex; flex-direction: column; gap: 4px; margin-top: 3px; max-width: 82%; }
.mine .files { align-items: flex-end; }
.file { border: 1px solid #e5e7eb; background: #fff; border-radius: 12px; padding: 0; cursor: pointer; color: inherit; text-align: left; }
.file.img { overflow: hidden; line-height: 0; }
.file img { max-width: 220px; max-height: 180px; min-width: 40px; min-height: 40px; display: block; object-fit: contain; background: #f3f4f6; }
.file.doc { display: inline-flex; gap: 8px; align-items: center; padding: 7px 11px; }
.file .fname { font-weight: 600; overflow-wrap: anywhere; }
.file .fsize { color: #6b7280; font-size: 12px; }
@media (prefers-reduced-motion: reduce) { * { animation: none !important; transition: none !important; } }
`;

  // -------------------------------------------------------------------------------------
  // Building the UI
  // -------------------------------------------------------------------------------------
  const host = document.createElement('div');
  host.setAttribute('data-kefu-widget', '');
  const shadow = host.attachShadow({ mode: 'open' });
  try {
    const sheet = new CSSStyleSheet();
    sheet.replaceSync(CSS);
    shadow.adoptedStyleSheets = [sheet];
  } catch (_) {
    shadow.append(el('style', { text: CSS })); // older browsers
  }

  const ui = {};
  ui.avatar = el('div', { class: 'avatar', 'aria-hidden': 'true' });
  ui.name = el('div', { class: 'name', text: 'Chat' });
  ui.dot = el('span', { class: 'dot', 'aria-hidden': 'true' });
  ui.subText = el('span', { text: '' });
  ui.close = el('button', { class: 'close', type: 'button', 'aria-label': 'Close chat', onclick: () => setOpen(false) }, [icon(ICON_CLOSE, 22)]);
  ui.banner = el('div', { class: 'banner', role: 'status', hidden: true });
  ui.conn = el('div', { class: 'conn', role: 'status', hidden: true });
  ui.greeting = el('li', { class: 'msg theirs greeting', hidden: true });
  ui.log = el('ol', { class: 'log', role: 'log', 'aria-live': 'polite', 'aria-label': 'Messages' }, [ui.greeting]);
  ui.pending = el('ol', { class: 'log-pending', 'aria-label': 'Messages being sent' });
  ui.scroll = el('div', { class: 'scroll' }, [ui.log, ui.pending]);
  ui.typingText = el('span', { text: '' });
  ui.typing = el('div', { class: 'typing', 'aria-live': 'polite' }, []);
  ui.rate = el('div', { class: 'rate', hidden: true });
  // Outside business hours (or with nobody online): "leave your email and we'll reply".
  ui.askEmail = el('input', { type: 'email', class: 'ask-email', autocomplete: 'email', placeholder: 'you@example.com', 'aria-label': 'Your email', maxlength: '200', required: true });
  ui.ask = el('form', { class: 'ask', hidden: true, 'aria-label': 'Leave your email' }, [
    el('label', { text: 'Leave your email and we’ll get back to you:' }),
    ui.askEmail,
    el('button', { type: 'submit', text: 'Save' }),
  ]);
  ui.ask.addEventListener('submit', (e) => { e.preventDefault(); saveEmail(); });
  ui.input = el('textarea', {
    rows: '1',
    'aria-label': 'Write a message',
    placeholder: 'Write a message…',
    maxlength: String(MAX_BODY),
    enterkeyhint: 'send',
  });
  ui.send = el('button', { class: 'send', type: 'submit', 'aria-label': 'Send message', disabled: true }, [icon(ICON_SEND, 20)]);
  ui.file = el('input', { type: 'file', multiple: true, hidden: true, 'aria-hidden': 'true', tabindex: '-1' });
  ui.attach = el('button', { class: 'attach', type: 'button', 'aria-label': 'Attach a file', text: '📎', onclick: () => ui.file.click() });
  ui.form = el('form', { class: 'compose', 'aria-label': 'Send a message' }, [ui.attach, ui.file, ui.input, ui.send]);
  ui.panel = el('section', { class: 'panel', role: PAGE_MODE ? 'main' : 'dialog', 'aria-label': 'Chat', id: 'kefu-panel' }, [
    el('header', { class: 'head' }, [
      ui.avatar,
      el('div', { class: 'titles' }, [ui.name, el('div', { class: 'sub' }, [ui.dot, ui.subText])]),
      PAGE_MODE ? null : ui.close,
    ]),
    ui.banner,
    ui.ask,
    ui.conn,
    ui.scroll,
    ui.typing,
    ui.rate,
    ui.form,
    el('div', { class: 'brand', text: 'Powered by kefu' }),
  ]);
  ui.badge = el('span', { class: 'badge', hidden: true });
  ui.launcher = el('button', {
    class: 'launcher',
    type: 'button',
    'aria-label': 'Open chat',
    'aria-expanded': 'false',
    'aria-controls': 'kefu-panel',
    onclick: () => setOpen(!state.open),
  }, [icon(ICON_CHAT, 28), icon(ICON_CHEVRON, 30), ui.badge]);
  ui.launcher.firstChild.classList.add('when-closed');
  ui.launcher.children[1].classList.add('when-open');
  // An unread message while the panel is closed (an agent greeting first, a reply) shows
  // beside the launcher; a click opens the chat.
  ui.teaserWho = el('span', { class: 'teaser-who' });
  ui.teaserText = el('span', { class: 'teaser-text' });
  ui.teaser = el('button', { class: 'teaser', type: 'button', hidden: true, onclick: () => setOpen(true) }, [ui.teaserWho, ui.teaserText]);
  ui.root = el('div', { class: 'root ' + (PAGE_MODE ? 'page' : 'bubble-mode') }, [ui.panel, PAGE_MODE ? null : ui.teaser, PAGE_MODE ? null : ui.launcher]);
  shadow.append(ui.root);

  function mount() {
    (document.body || document.documentElement).append(host);
  }
  if (document.body) mount();
  else document.addEventListener('DOMContentLoaded', mount, { once: true });

  // -------------------------------------------------------------------------------------
  // Rendering
  // -------------------------------------------------------------------------------------
  function assigneeName() {
    const a = state.conversation && state.conversation.assignee;
    return a && a.name ? a.name : '';
  }

  function renderHeader() {
    const agent = assigneeName();
    const name = state.siteName || 'Chat';
    ui.name.textContent = agent || name;
    ui.avatar.textContent = (agent || name).trim().charAt(0) || '?';
    const closed = state.withinHours === false;
    const online = !!agent || (state.agentsOnline === true && !closed);
    ui.dot.classList.toggle('on', online);
    if (agent) ui.subText.textContent = name + ' · here to help';
    else if (closed) ui.subText.textContent = 'We’re closed' + (state.nextOpenAt ? ' · back ' + whenOpen(state.nextOpenAt) : '');
    else if (state.agentsOnline === false) ui.subText.textContent = 'We’re away right now';
    else if (state.agentsOnline === true) ui.subText.textContent = 'We typically reply in a few minutes';
    else ui.subText.textContent = '';
    ui.panel.setAttribute('aria-label', 'Chat with ' + (agent || name));
    const away = (state.agentsOnline === false || closed) && !agent;
    ui.banner.hidden = !(away && state.offlineMessage);
    ui.banner.textContent = state.offlineMessage;
    renderAsk(away);
    ui.greeting.hidden = !state.greeting;
    ui.greeting.replaceChildren(el('div', { class: 'bubble', text: state.greeting }));
    if (PAGE_MODE) document.title = 'Chat — ' + name;
    renderRating();
  }

  /**
   * CSAT, once the conversation is resolved: five stars (a click sends the rating), then
   * an optional comment. The rating stays changeable while the server accepts it; a
   * refusal (too long after resolution) hides the prompt.
   */
  function renderRating() {
    const c = state.conversation;
    const r = state.rating;
    const show = !!c && c.status === 'resolved' && !r.closed;
    ui.rate.hidden = !show;
    if (!show) return;
    const score = r.sent || c.rating || 0;
    const focused = shadow.activeElement && ui.rate.contains(shadow.activeElement) ? shadow.activeElement.className : '';
    const draft = ui.rate.querySelector('.rate-comment');
    const comment = draft ? draft.value : (c.rating_comment || '');
    const stars = [1, 2, 3, 4, 5].map((n) =>
      el('button', { type: 'button', class: 'star', 'aria-label': 'Rate ' + n + ' of 5', 'aria-pressed': String(n === score), text: n <= score ? '★' : '☆', onclick: () => sendRating(n) }));
    if (!score) {
      ui.rate.replaceChildren(el('span', { class: 'rate-title', text: 'How did we do?' }), ...stars);
      return;
    }
    const box = el('textarea', { class: 'rate-comment', rows: '2', maxlength: '2000', 'aria-label': 'Comment (optional)', placeholder: 'Tell us more (optional)' });
    box.value = comment;
    const send = el('button', { type: 'button', class: 'rate-send', text: r.commentSent ? 'Comment sent' : 'Send comment', onclick: () => sendRating(score, box.value) });
    box.addEventListener('input', () => { r.commentSent = false; send.textContent = 'Send comment'; });
    ui.rate.replaceChildren(el('span', { class: 'rate-title', text: 'Thanks for your feedback!' }), ...stars, box, send);
    if (focused === 'rate-comment') box.focus();
  }

  function whenOpen(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return '';
    const soon = d - Date.now() < 20 * 3600 * 1000;
    return soon
      ? 'at ' + d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : d.toLocaleString([], { weekday: 'short', hour: '2-digit', minute: '2-digit' });
  }

  /** The email request, while nobody can answer now and we have no email yet. */
  function renderAsk(away) {
    const known = state.visitor && state.visitor.email;
    ui.ask.hidden = !(away && !known && !state.emailSaved);
  }

  function saveEmail() {
    const email = ui.askEmail.value.trim();
    if (!email || !ui.askEmail.checkValidity()) { ui.askEmail.focus(); return; }
    state.profile = Object.assign({}, state.profile, { email });
    state.emailSaved = email;
    sendProfile();
    ui.ask.replaceChildren(el('span', { text: 'Thanks! We’ll reply to ' + email + '.' }));
    ui.ask.hidden = false;
  }

  function senderLabel(m) {
    if (m.sender_type === 'visitor') return 'You';
    if (m.sender_type === 'bot') return 'Bot';
    if (m.sender_type === 'system') return '';
    const a = state.conversation && state.conversation.assignee;
    if (a && m.sender_id === a.id) return a.name;
    return state.siteName || 'Support';
  }

  function messageItem(m) {
    const mine = m.sender_type === 'visitor';
    const kind = m.sender_type === 'system' ? 'system' : mine ? 'mine' : 'theirs';
    const li = el('li', { class: 'msg ' + kind, 'data-seq': String(m.seq), 'data-id': m.id });
    const label = senderLabel(m);
    li.append(el('div', { class: 'who', text: label }));
    if (m.body) li.append(el('div', { class: 'bubble', text: m.body }));
    if (m.attachments && m.attachments.length) li.append(el('div', { class: 'files' }, m.attachments.map(fileItem)));
    li.append(el('div', { class: 'meta', text: timeOf(m.created_at) }));
    return li;
  }

  // -------------------------------------------------------------------------------------
  // Attachments: uploaded before the message that carries them; read back with the
  // visitor's token (the URL alone grants nothing), shown from blob: URLs.
  // -------------------------------------------------------------------------------------
  const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
  const blobs = new Map(); // attachment id -> Promise<blob: URL>

  function fmtSize(n) {
    if (n < 1024) return n + ' B';
    if (n < 1048576) return Math.round(n / 1024) + ' KB';
    return (n / 1048576).toFixed(1) + ' MB';
  }

  function visitorUrl(path, extra) {
    const u = new URL(path, BASE);
    u.searchParams.set('site', SITE);
    if (state.token) u.searchParams.set('token', state.token);
    for (const [k, v] of Object.entries(extra || {})) u.searchParams.set(k, String(v));
    return u.href;
  }

  function fileBlob(a) {
    if (!blobs.has(a.id)) {
      const p = fetch(visitorUrl(a.url), { credentials: 'omit' })
        .then((r) => { if (!r.ok) throw new Error(String(r.status)); return r.blob(); })
        .then((b) => URL.createObjectURL(b));
      p.catch(() => blobs.delete(a.id));
      blobs.set(a.id, p);
    }
    return blobs.get(a.id);
  }

  function fileItem(a) {
    if (IMAGE_TYPES.includes(a.content_type)) {
      const img = el('img', { alt: a.name });
      fileBlob(a).then((u) => { img.src = u; }).catch(() => { img.alt = a.name + ' (unavailable)'; });
      return el('button', {
        class: 'file img', type: 'button', 'aria-label': 'Open image ' + a.name,
        onclick: () => fileBlob(a).then((u) => window.open(u, '_blank', 'noopener')).catch(() => {}),
      }, [img]);
    }
    return el('button', {
      class: 'file doc', type: 'button', 'aria-label': 'Download ' + a.name,
      onclick: () => fileBlob(a).then((u) => {
        const link = el('a', { href: u, download: a.name });
        shadow.append(link);
        link.click();
        link.remove();
      }).catch(() => {}),
    }, [el('span', { text: '📎', 'aria-hidden': 'true' }), el('span', { class: 'fname', text: a.name }), el('span', { class: 'fsize', text: fmtSize(a.size) })]);
  }

  /** Uploads a file, then sends it as a message of its own (retried like any send). */
  async function sendFile(file) {
    const note = (text) => { ui.conn.hidden = false; ui.conn.textContent = text; };
    if (!state.token) { note('Not connected yet; try again in a moment.'); return; }
    try {
      const res = await fetch(visitorUrl('/api/visitor/attachments', { name: file.name }), {
        method: 'POST',
        credentials: 'omit',
        // text/plain keeps the request CORS-simple; the server sniffs the real type.
        headers: { 'content-type': 'text/plain' },
        body: file,
      });
      const data = await res.json().catch(() => null);
      if (!res.ok) {
        note(res.status === 413 ? file.name + ' is too large.' : (data && data.error && data.error.message) || 'Upload failed.');
        return;
      }
      const entry = { id: randomId(), body: '', attachments: [data], at: Date.now(), sentAt: 0, failed: null };
      state.outbox.push(entry);
      saveOutbox();
      renderPending();
      scrollToBottom();
      pump();
    } catch (_) {
      note('Upload failed. Check your connection and try again.');
    }
  }

  /** Hides repeated sender names and puts the read status on the last own message. */
  function tidyLog() {
    let prev = null;
    let lastMine = null;
    for (const li of ui.log.children) {
      if (li === ui.greeting) continue;
      const who = li.querySelector('.who');
      const label = who ? who.textContent : '';
      const sameAsPrev = prev && prev.dataset.sender === label;
      li.dataset.sender = label;
      if (who) who.hidden = !label || label === 'You' || sameAsPrev;
      if (li.classList.contains('mine')) lastMine = li;
      prev = li;
    }
    for (const meta of ui.log.querySelectorAll('.msg.mine .meta')) {
      const li = meta.parentElement;
      const seq = Number(li.dataset.seq);
      const m = state.bySeq.get(seq);
      let text = m ? timeOf(m.created_at) : '';
      if (li === lastMine && ui.pending.children.length === 0) {
        text += state.agentReadSeq >= seq ? ' · Read' : ' · Sent';
      }
      meta.textContent = text;
    }
  }

  function nearBottom() {
    const s = ui.scroll;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
  }
  function scrollToBottom() {
    ui.scroll.scrollTop = ui.scroll.scrollHeight;
  }

  function renderUnread() {
    let n = 0;
    let latest = null;
    for (const [seq, m] of state.bySeq) {
      if (seq > state.readSeq && m.sender_type !== 'visitor') {
        n++;
        if (!latest || seq > latest.seq) latest = m;
      }
    }
    const show = n > 0 && !(state.open && document.visibilityState === 'visible');
    ui.badge.hidden = !show;
    ui.teaser.hidden = !show || state.open || !latest;
    if (latest) {
      ui.teaserWho.textContent = senderLabel(latest) || state.siteName || 'Support';
      ui.teaserText.textContent = latest.body;
      ui.teaser.setAttribute('aria-label', 'Open chat: new message from ' + ui.teaserWho.textContent);
    }
    ui.badge.textContent = n > 9 ? '9+' : String(n);
    const unread = show ? n : 0;
    if (unread !== state.unread) {
      state.unread = unread;
      if (state.started) api.emit('unread', { count: unread });
    }
    ui.launcher.setAttribute('aria-label', show ? 'Open chat, ' + n + ' unread message' + (n === 1 ? '' : 's') : state.open ? 'Close chat' : 'Open chat');
  }

  function pendingItem(entry) {
    const li = el('li', { class: 'msg mine pending', 'data-client-id': entry.id });
    if (entry.body) li.append(el('div', { class: 'bubble', text: entry.body }));
    for (const a of entry.attachments || []) li.append(el('div', { class: 'bubble', text: '📎 ' + a.name }));
    const meta = el('div', { class: 'meta' });
    if (entry.failed) {
      li.classList.add('failed');
      meta.append(document.createTextNode('Not sent: ' + entry.failed + ' · '));
      meta.append(el('button', { class: 'retry', type: 'button', text: 'Retry', onclick: () => { entry.failed = null; entry.sentAt = 0; renderPending(); pump(); } }));
    } else {
      meta.textContent = 'Sending…';
    }
    li.append(meta);
    return li;
  }

  function renderPending() {
    ui.pending.replaceChildren(...state.outbox.map(pendingItem));
    tidyLog();
  }

  function setTheirTyping(on, label) {
    clearTimeout(state.theirTypingTimer);
    state.theirTyping = on;
    if (on) {
      ui.typing.replaceChildren(
        el('span', { class: 'dots', 'aria-hidden': 'true' }, [el('i'), el('i'), el('i')]),
        el('span', { text: (label || 'Support') + ' is typing…' }));
      state.theirTypingTimer = setTimeout(() => setTheirTyping(false), THEIR_TYPING_MS);
    } else {
      ui.typing.replaceChildren();
    }
  }

  // -------------------------------------------------------------------------------------
  // Messages in and out
  // -------------------------------------------------------------------------------------
  function addMessage(m) {
    if (!m || typeof m.seq !== 'number' || m.private) return false;
    if (state.conversation && m.conversation_id !== state.conversation.id) {
      // A message of an older conversation (or a reset visitor): ignore.
      if (state.bySeq.size > 0 || state.conversation.id) return false;
    }
    // An outbox entry this message answers is done, whichever path told us.
    if (m.sender_type === 'visitor' && m.client_msg_id) {
      const i = state.outbox.findIndex((e) => e.id === m.client_msg_id);
      if (i >= 0) {
        state.outbox.splice(i, 1);
        saveOutbox();
        renderPending();
      }
    }
    if (state.bySeq.has(m.seq)) return false; // never twice
    state.bySeq.set(m.seq, m);
    if (m.seq > state.lastSeq) state.lastSeq = m.seq;
    const stick = nearBottom() || m.sender_type === 'visitor';
    const li = messageItem(m);
    let after = ui.log.lastElementChild;
    while (after && after !== ui.greeting && Number(after.dataset.seq) > m.seq) after = after.previousElementSibling;
    if (after) after.after(li);
    else ui.log.prepend(li);
    tidyLog();
    if (stick) scrollToBottom();
    return true;
  }

  function setConversation(c) {
    if (!c) return;
    const prev = state.conversation;
    // Answers of different requests can cross: never go back to an older state.
    if (prev && prev.id === c.id && prev.updated_at && Date.parse(c.updated_at) < Date.parse(prev.updated_at)) return;
    if (prev && prev.id && prev.id !== c.id) {
      resetMessages();
      state.rating = { sent: 0, closed: false, commentSent: false };
    }
    state.conversation = c;
    renderHeader();
  }

  function resetMessages() {
    state.bySeq.clear();
    state.lastSeq = 0;
    state.readSeq = 0;
    state.sentReadSeq = 0;
    state.agentReadSeq = 0;
    for (const li of [...ui.log.children]) if (li !== ui.greeting) li.remove();
  }

  function submit() {
    const body = ui.input.value.trim();
    if (!body) return;
    if ([...body].length > MAX_BODY) {
      ui.conn.hidden = false;
      ui.conn.textContent = 'That message is too long (at most ' + MAX_BODY + ' characters).';
      return;
    }
    const entry = { id: randomId(), body, at: Date.now(), sentAt: 0, failed: null };
    state.outbox.push(entry);
    saveOutbox();
    ui.input.value = '';
    autosize();
    updateSendButton();
    typingOff();
    renderPending();
    scrollToBottom();
    pump();
  }

  /** Sends every outbox entry that is due: never sent on this connection, or unanswered. */
  function pump() {
    if (!state.ready) return;
    const now = Date.now();
    for (const e of state.outbox) {
      if (e.failed) continue;
      if (e.sentAt && now - e.sentAt < RESEND_AFTER_MS) continue;
      const frame = { type: 'message.send', client_msg_id: e.id, body: e.body };
      if (e.attachments && e.attachments.length) frame.attachments = e.attachments.map((a) => a.id);
      if (transport.send(frame)) e.sentAt = now;
    }
  }

  function onSendError(entry, code, message) {
    if (code === 'rate_limited' || code === 'unavailable' || code === 'internal') {
      entry.sentAt = Date.now() - RESEND_AFTER_MS + 2000; // try again in ~2 s
      return;
    }
    entry.failed = message || code;
    renderPending();
  }

  function markRead() {
    if (!(state.open && document.visibilityState === 'visible')) return;
    if (state.lastSeq > state.readSeq) {
      state.readSeq = state.lastSeq;
      store.set('read', { seq: state.readSeq });
    }
    if (state.ready && state.lastSeq > state.sentReadSeq && state.conversation) {
      if (transport.send({ type: 'read', up_to_seq: state.lastSeq })) state.sentReadSeq = state.lastSeq;
    }
  }

  function sendRating(score, comment) {
    const frame = { type: 'rating', score };
    if (typeof comment === 'string' && comment.trim()) frame.comment = comment.trim();
    if (transport.send(frame)) {
      state.rating.sent = score;
      state.rating.pendingComment = !!frame.comment;
      renderRating();
    }
  }

  // Typing, throttled: "on" at most every 2.5 s, "off" after a pause or on send.
  let typingOn = false;
  let typingSentAt = 0;
  let typingTimer = null;
  function typingPing() {
    if (!state.conversation) return; // nobody to tell yet
    const now = Date.now();
    if (!typingOn || now - typingSentAt > 2500) {
      if (transport.send({ type: 'typing', on: true })) {
        typingOn = true;
        typingSentAt = now;
      }
    }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(typingOff, TYPING_IDLE_MS);
  }
  function typingOff() {
    clearTimeout(typingTimer);
    if (typingOn) transport.send({ type: 'typing', on: false });
    typingOn = false;
  }

  function pageAttributes() {
    const cut = (s, n) => String(s || '').slice(0, n);
    let tz = '';
    try { tz = Intl.DateTimeFormat().resolvedOptions().timeZone || ''; } catch (_) { /* old browser */ }
    return {
      page_url: cut(location.href, 1000),
      page_title: cut(document.title, 200),
      referrer: cut(document.referrer, 1000),
      language: cut(navigator.language, 35),
      user_agent: cut(navigator.userAgent, 400),
      timezone: cut(tz, 64),
      screen: (window.screen ? screen.width + 'x' + screen.height : ''),
    };
  }

  function sendProfile() {
    if (!state.ready) return;
    const attributes = pageAttributes();
    const key = JSON.stringify(attributes) + JSON.stringify(state.profile);
    if (key === state.attributesSent) return;
    const frame = Object.assign({ type: 'profile.update', attributes }, state.profile || {});
    if (transport.send(frame)) state.attributesSent = key;
  }

  // -------------------------------------------------------------------------------------
  // Server frames
  // -------------------------------------------------------------------------------------
  function onFrame(f) {
    switch (f.type) {
      case 'session.welcome': {
        if (f.token && f.token !== state.token) {
          state.token = f.token;
          store.set('token', f.token);
        }
        // Another visitor than before (setUser switched users, or reset()): start clean.
        if (state.visitor && f.visitor && state.visitor.id !== f.visitor.id) forgetConversation();
        state.visitor = f.visitor;
        state.greeting = f.greeting || state.greeting;
        state.agentsOnline = !!f.agents_online;
        if (typeof f.within_business_hours === 'boolean') setHours(f.within_business_hours, f.next_open_at);
        if (f.conversation) setConversation(f.conversation);
        else renderHeader();
        const first = !state.everReady;
        state.everReady = true;
        state.ready = true;
        state.attributesSent = '';
        transport.connected();
        showConn();
        transport.send({ type: 'resume', after_seq: state.lastSeq });
        sendProfile();
        for (const e of state.outbox) e.sentAt = 0; // resend what was in flight
        pump();
        flushAttributes();
        if (first) api.emit('ready', { visitor_id: f.visitor && f.visitor.id, within_business_hours: state.withinHours });
        break;
      }
      case 'message.history': {
        for (const m of f.messages || []) {
          if (!state.conversation && f.conversation_id) state.conversation = { id: f.conversation_id };
          addMessage(m);
        }
        if (f.more) transport.send({ type: 'resume', after_seq: state.lastSeq });
        renderUnread();
        markRead();
        break;
      }
      case 'message.ack': {
        const m = f.message;
        if (m && (!state.conversation || !state.conversation.id)) {
          state.conversation = Object.assign({ id: m.conversation_id }, state.conversation || {});
        }
        const i = state.outbox.findIndex((e) => e.id === f.client_msg_id);
        if (i >= 0) {
          state.outbox.splice(i, 1);
          saveOutbox();
          renderPending();
        }
        addMessage(m);
        break;
      }
      case 'message.created': {
        if (addMessage(f.message)) {
          if (f.message.sender_type !== 'visitor') {
            setTheirTyping(false);
            api.emit('message', publicMessage(f.message));
          }
          renderUnread();
          markRead();
        }
        break;
      }
      case 'conversation.updated':
        setConversation(f.conversation);
        break;
      case 'typing':
        if (f.sender_type !== 'visitor') setTheirTyping(!!f.on, assigneeName() || state.siteName);
        break;
      case 'message.read':
        if (f.sender_type !== 'visitor' && f.up_to_seq > state.agentReadSeq) {
          state.agentReadSeq = f.up_to_seq;
          tidyLog();
        }
        break;
      case 'visitor.updated':
        state.visitor = f.visitor;
        renderHeader();
        break;
      case 'rating.ack':
        if (state.rating.pendingComment) state.rating.commentSent = true;
        state.rating.pendingComment = false;
        renderRating();
        break;
      case 'error': {
        const entry = f.ref && state.outbox.find((e) => e.id === f.ref);
        if (entry) onSendError(entry, f.code, f.message);
        else if (f.code === 'conflict' && state.rating.sent) { state.rating.closed = true; renderRating(); }
        else console.debug('kefu:', f.code, f.message);
        break;
      }
      default:
        break; // pong and frames this version does not know
    }
  }

  // -------------------------------------------------------------------------------------
  // Transports: WebSocket first; HTTP long-polling where WebSocket never opens.
  // Both call onFrame with the same frames and accept the same client frames.
  // -------------------------------------------------------------------------------------
  function wsTransport(hooks) {
    let sock = null;
    let lastFrameAt = 0;
    let keepalive = null;
    return {
      name: 'websocket',
      start() {
        const u = new URL('/ws/visitor', BASE);
        u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
        u.searchParams.set('site', SITE);
        if (state.token) u.searchParams.set('token', state.token);
        identityParams(u);
        let s;
        try {
          s = new WebSocket(u.href);
        } catch (_) {
          hooks.closed(false);
          return;
        }
        sock = s;
        let opened = false;
        s.onopen = () => { opened = true; lastFrameAt = Date.now(); };
        s.onmessage = (ev) => {
          lastFrameAt = Date.now();
          let f;
          try { f = JSON.parse(ev.data); } catch (_) { return; }
          if (f && typeof f === 'object') onFrame(f);
        };
        s.onclose = () => {
          if (sock !== s) return;
          sock = null;
          clearInterval(keepalive);
          hooks.closed(opened);
        };
        keepalive = setInterval(() => {
          if (s.readyState !== WebSocket.OPEN) return;
          if (Date.now() - lastFrameAt > DEAD_AFTER_MS) { s.close(); return; }
          s.send('{"type":"ping"}');
        }, KEEPALIVE_MS);
      },
      send(frame) {
        if (!sock || sock.readyState !== WebSocket.OPEN) return false;
        sock.send(JSON.stringify(frame));
        return true;
      },
      stop() {
        if (sock) { const s = sock; sock = null; clearInterval(keepalive); s.close(); }
      },
    };
  }

  /**
   * Long-polling, for networks that block WebSocket: POST /api/visitor/session for the
   * welcome, GET /api/visitor/poll?after_seq= for what happened (it waits up to ~25 s),
   * POST /api/visitor/send for each client frame. Requests are CORS-simple (token in the
   * query, body as text/plain): no preflight from the host page's origin.
   */
  function pollTransport(hooks) {
    let running = false;
    let ctrl = null;
    let polledConversation = null;
    let ev = 0; // the newest typing/read signal had (the server replays newer ones)
    function url(path, extra) {
      const u = new URL(path, BASE);
      u.searchParams.set('site', SITE);
      if (state.token) u.searchParams.set('token', state.token);
      for (const [k, v] of Object.entries(extra || {})) u.searchParams.set(k, String(v));
      if (path === '/api/visitor/session') identityParams(u);
      return u.href;
    }
    async function loop() {
      let opened = false;
      try {
        const res = await fetch(url('/api/visitor/session'), { method: 'POST', credentials: 'omit' });
        if (res.status === 401 && state.user) {
          // A refused identity: say so once, clearly, for the page's developer.
          const body = await res.json().catch(() => null);
          const why = (body && body.error && body.error.message) || 'identity verification failed';
          if (state.identityError !== why) console.warn('kefu: setUser refused: ' + why);
          state.identityError = why;
          api.emit('error', { code: 'unauthorized', message: why });
        }
        if (!res.ok) throw new Error('session ' + res.status);
        const welcome = await res.json();
        opened = true;
        onFrame(welcome);
        while (running) {
          ctrl = new AbortController();
          polledConversation = state.conversation && state.conversation.id;
          let body;
          try {
            const r = await fetch(url('/api/visitor/poll', { after_seq: state.lastSeq, ev }), { signal: ctrl.signal, credentials: 'omit', cache: 'no-store' });
            if (!r.ok) throw new Error('poll ' + r.status);
            body = await r.json();
            if (typeof body.ev === 'number') ev = body.ev;
          } catch (e) {
            if (e && e.name === 'AbortError' && running) continue; // nudged: poll again now
            throw e;
          }
          for (const f of body.frames || []) onFrame(f);
        }
      } catch (_) { /* reconnect below */ }
      if (running) {
        running = false;
        hooks.closed(opened);
      }
    }
    return {
      name: 'polling',
      start() {
        running = true;
        loop();
      },
      send(frame) {
        if (!running || !state.token) return false;
        fetch(url('/api/visitor/send'), {
          method: 'POST',
          credentials: 'omit',
          headers: { 'content-type': 'text/plain;charset=UTF-8' },
          body: JSON.stringify(frame),
        }).then((r) => r.json()).then((body) => {
          for (const f of (body && body.frames) || []) onFrame(f);
          // The first message created the conversation: the waiting poll knew none.
          const now = state.conversation && state.conversation.id;
          if (now && now !== polledConversation && ctrl) ctrl.abort();
        }).catch(() => { /* pump() resends after RESEND_AFTER_MS */ });
        return true;
      },
      stop() {
        running = false;
        if (ctrl) ctrl.abort();
      },
    };
  }

  const transport = (function () {
    let current = null;
    let attempt = 0;
    let wsFailures = 0;
    let usePolling = false;
    let timer = null;
    let downSince = Date.now();
    const hooks = {
      closed(opened) {
        state.ready = false;
        downSince = Date.now();
        if (current && current.name === 'websocket') {
          wsFailures = opened ? 0 : wsFailures + 1;
          if (wsFailures >= WS_FAILS_BEFORE_POLLING) usePolling = true;
        }
        showConn();
        schedule();
      },
    };
    function schedule() {
      clearTimeout(timer);
      attempt++;
      const delay = Math.min(BACKOFF_MAX_MS, 500 * 2 ** Math.min(attempt - 1, 6)) * (0.75 + Math.random() * 0.5);
      timer = setTimeout(start, delay);
      setTimeout(showConn, 1600);
    }
    function start() {
      clearTimeout(timer);
      if (current) current.stop();
      current = usePolling ? pollTransport(hooks) : wsTransport(hooks);
      current.start();
    }
    return {
      start,
      send: (frame) => (state.ready && current ? current.send(frame) : false),
      connected() {
        attempt = 0;
        downSince = 0;
        host.setAttribute('data-transport', current ? current.name : '');
      },
      downFor: () => (downSince ? Date.now() - downSince : 0),
      kick() { if (!state.ready && !current) start(); else if (!state.ready) { attempt = 0; start(); } },
      /** Connects again now (another identity). */
      restart() {
        if (!current) return; // not started yet: the first connection will carry it
        state.ready = false;
        attempt = 0;
        start();
      },
      get name() { return current ? current.name : ''; },
    };
  })();

  function showConn() {
    const down = !state.ready && transport.downFor() > 1500;
    if (down) {
      ui.conn.hidden = false;
      ui.conn.textContent = 'Reconnecting…';
    } else if (ui.conn.textContent === 'Reconnecting…') {
      ui.conn.hidden = true;
    }
  }

  // -------------------------------------------------------------------------------------
  // Panel, input and page events
  // -------------------------------------------------------------------------------------
  function setOpen(open) {
    const was = state.open;
    state.open = PAGE_MODE || open;
    if (state.started && was !== state.open) api.emit(state.open ? 'open' : 'close', {});
    if (!PAGE_MODE) store.set('open', state.open);
    ui.panel.hidden = !state.open;
    ui.root.classList.toggle('open', state.open);
    ui.launcher.setAttribute('aria-expanded', String(state.open));
    if (state.open) {
      scrollToBottom();
      markRead();
      if (!PAGE_MODE || document.activeElement === document.body) ui.input.focus({ preventScroll: true });
    } else if (!PAGE_MODE && shadow.activeElement) {
      ui.launcher.focus();
    }
    renderUnread();
  }

  function autosize() {
    ui.input.style.height = 'auto';
    ui.input.style.height = Math.min(ui.input.scrollHeight + 2, 132) + 'px';
  }
  function updateSendButton() {
    ui.send.disabled = ui.input.value.trim() === '';
  }

  ui.form.addEventListener('submit', (e) => { e.preventDefault(); submit(); });
  ui.file.addEventListener('change', () => {
    for (const f of ui.file.files) sendFile(f);
    ui.file.value = '';
  });
  ui.input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      submit();
    }
  });
  ui.input.addEventListener('input', () => {
    autosize();
    updateSendButton();
    if (ui.input.value.trim()) typingPing();
    else typingOff();
  });
  ui.panel.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !PAGE_MODE) setOpen(false);
  });
  document.addEventListener('visibilitychange', () => {
    renderUnread();
    markRead();
    if (document.visibilityState === 'visible') transport.kick();
  });
  window.addEventListener('online', () => transport.kick());
  // Single-page apps change the URL without a reload: keep the agent's view current.
  setInterval(sendProfile, 5000);
  // Unacknowledged sends are repeated until acknowledged.
  setInterval(pump, 2000);
  // Agents come and go: refresh "online / away" while nobody is assigned.
  setInterval(() => {
    if (state.open && !assigneeName() && document.visibilityState === 'visible') loadConfig(true);
  }, 60000);

  // -------------------------------------------------------------------------------------
  // Host-page API: window.kefu (see the header of this file and README.md)
  // -------------------------------------------------------------------------------------
  const EVENTS = ['ready', 'open', 'close', 'message', 'unread', 'error'];

  function publicMessage(m) {
    return { id: m.id, conversation_id: m.conversation_id, seq: m.seq, sender_type: m.sender_type, body: m.body, created_at: m.created_at };
  }

  function setHours(within, nextOpenAt) {
    state.withinHours = within;
    state.nextOpenAt = within ? null : nextOpenAt || null;
    clearTimeout(state.hoursTimer);
    if (state.nextOpenAt) {
      // Opening time: ask again (the server's clock and schedule decide).
      const wait = Math.min(Math.max(Date.parse(state.nextOpenAt) - Date.now(), 0) + 1000, 2 ** 31 - 1);
      state.hoursTimer = setTimeout(() => loadConfig(true), wait);
    }
    renderHeader();
  }

  /** Drops everything of the current visitor's conversation (another visitor now). */
  function forgetConversation() {
    resetMessages();
    state.conversation = null;
    state.rating = { sent: 0, closed: false, commentSent: false };
    state.outbox = [];
    saveOutbox();
    store.set('read', { seq: 0 });
    renderPending();
    renderHeader();
    renderUnread();
  }

  function plainObject(v) {
    return !!v && typeof v === 'object' && !Array.isArray(v);
  }

  function setUser(user) {
    if (!plainObject(user)) throw new TypeError('kefu.setUser expects an object {user_id, user_hash, name, email}');
    const p = {};
    if (typeof user.name === 'string') p.name = user.name;
    if (typeof user.email === 'string') p.email = user.email;
    if (Object.keys(p).length) {
      state.profile = Object.assign({}, state.profile, p);
      sendProfile();
    }
    if (user.user_id === undefined || user.user_id === null || user.user_id === '') return;
    const next = { user_id: String(user.user_id), user_hash: String(user.user_hash || '') };
    const same = state.user && state.user.user_id === next.user_id && state.user.user_hash === next.user_hash;
    if (same) return;
    state.user = next;
    state.identityError = null;
    // Connected as someone else (or anonymously): connect again as this user.
    if (state.started) transport.restart();
  }

  function identityParams(u) {
    if (!state.user) return;
    u.searchParams.set('user_id', state.user.user_id);
    if (state.user.user_hash) u.searchParams.set('user_hash', state.user.user_hash);
  }

  /** PATCH /api/visitor/attributes once the visitor has a token; resolves to the visitor. */
  function setAttributes(attributes) {
    if (!plainObject(attributes)) return Promise.reject(new TypeError('kefu.setAttributes expects an object'));
    return new Promise((resolve, reject) => {
      state.attributeQueue = state.attributeQueue || [];
      state.attributeQueue.push({ attributes, resolve, reject });
      flushAttributes();
    });
  }

  async function flushAttributes() {
    if (!state.token || !state.ready || state.flushingAttributes) return;
    state.flushingAttributes = true;
    try {
      while (state.attributeQueue && state.attributeQueue.length) {
        const job = state.attributeQueue.shift();
        const u = new URL('/api/visitor/attributes', BASE);
        u.searchParams.set('site', SITE);
        u.searchParams.set('token', state.token);
        try {
          const res = await fetch(u, { method: 'PATCH', credentials: 'omit', headers: { 'content-type': 'application/json' }, body: JSON.stringify(job.attributes) });
          const body = await res.json().catch(() => null);
          if (!res.ok) throw new Error((body && body.error && body.error.message) || 'HTTP ' + res.status);
          state.visitor = body;
          job.resolve(body);
        } catch (e) {
          job.reject(e);
        }
      }
    } finally {
      state.flushingAttributes = false;
    }
  }

  function reset() {
    state.token = null;
    store.set('token', null);
    state.user = null;
    state.profile = null;
    state.emailSaved = null;
    state.visitor = null;
    forgetConversation();
    if (state.started) transport.restart();
  }

  const methods = {
    open: () => setOpen(true),
    close: () => setOpen(false),
    setUser,
    setAttributes,
    reset,
    on(event, fn) {
      if (!EVENTS.includes(event)) throw new TypeError('kefu.on: unknown event "' + event + '" (one of ' + EVENTS.join(', ') + ')');
      if (typeof fn !== 'function') throw new TypeError('kefu.on expects a function');
      if (!api.listeners.has(event)) api.listeners.set(event, []);
      api.listeners.get(event).push(fn);
      // Late listeners still learn that the widget is ready.
      if (event === 'ready' && state.everReady) fn({ visitor_id: state.visitor && state.visitor.id, within_business_hours: state.withinHours });
    },
    off(event, fn) {
      const list = api.listeners.get(event);
      if (!list) return;
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    },
    /** The first version's name for setUser without identity: {name, email}. */
    identify(profile) {
      if (!plainObject(profile)) return;
      setUser({ name: profile.name, email: profile.email });
    },
  };

  // kefu('open') and kefu.open() both work; calls queued by the snippet run now, in order.
  const queued = typeof window.kefu === 'function' && Array.isArray(window.kefu.q) ? window.kefu.q : [];
  function kefu(name, ...args) {
    const fn = methods[name];
    if (typeof fn !== 'function') throw new TypeError('kefu: unknown method "' + name + '"');
    return fn(...args);
  }
  Object.assign(kefu, methods);
  window.kefu = kefu;
  window.Kefu = { open: methods.open, close: methods.close, identify: methods.identify };
  if (script.dataset.userId) {
    setUser({ user_id: script.dataset.userId, user_hash: script.dataset.userHash, name: script.dataset.userName, email: script.dataset.userEmail });
  }
  for (const args of queued) {
    try {
      const r = kefu(...Array.from(args));
      if (r && typeof r.catch === 'function') r.catch((e) => console.warn('kefu:', e.message));
    } catch (e) {
      console.warn('kefu:', e.message);
    }
  }

  // -------------------------------------------------------------------------------------
  // Start
  // -------------------------------------------------------------------------------------
  async function loadConfig(refresh) {
    try {
      const u = new URL('/api/config', BASE);
      u.searchParams.set('site', SITE);
      const res = await fetch(u, { credentials: 'omit' });
      if (res.status === 404) {
        state.siteName = 'Chat unavailable';
        state.offlineMessage = 'This chat is not set up correctly (unknown site key).';
        state.agentsOnline = false;
        renderHeader();
        return false;
      }
      if (!res.ok) throw new Error(String(res.status));
      const c = await res.json();
      state.config = c;
      state.siteName = c.name || '';
      state.greeting = state.greeting || c.greeting || '';
      state.offlineMessage = c.offline_message || '';
      if (state.agentsOnline === null || refresh) state.agentsOnline = !!c.agents_online;
      if (typeof c.within_business_hours === 'boolean') setHours(c.within_business_hours, c.next_open_at);
      const primary = c.colours && c.colours.primary;
      if (primary && window.CSS && CSS.supports('color', primary)) ui.root.style.setProperty('--kefu-primary', primary);
      renderHeader();
    } catch (_) {
      if (!refresh) setTimeout(loadConfig, 5000);
    }
    return true;
  }

  renderHeader();
  renderPending();
  setOpen(state.open);
  state.started = true;
  loadConfig().then((ok) => { if (ok) transport.start(); });
})();
