/*
 * kefu agent console (GET /console).
 *
 * State comes from the HTTP API; /ws/agent pushes changes. Every (re)connection of the
 * socket re-reads the inbox and the open conversation's messages after its last seq, so a
 * lost connection never leaves a stale inbox. Replies go through POST …/messages with a
 * client_msg_id and are retried until the server answers; messages are keyed by seq, so
 * none shows twice. Everything users wrote is put on screen with textContent.
 */
(function () {
  'use strict';

  const TOKEN_KEY = 'kefu.console.token';
  const ALERTS_KEY = 'kefu.console.alerts';
  const PAGE = 50; // messages per history page
  const LIST_PAGE = 50;
  const KEEPALIVE_MS = 15000;
  const DEAD_AFTER_MS = 40000;
  const THEIR_TYPING_MS = 6000;
  const TYPING_IDLE_MS = 4000;
  const LAST_SEQ = 9007199254740991; // "before the end"

  const $ = (id) => document.getElementById(id);
  // Feature modules (console-<feature>.js) hook in here: every live frame, every
  // (re)connection's resync, sign-out; and, for the workflow features
  // (web/console-workflow.js: attachments, canned responses, labels, attributes, search),
  // the extension points below. Each is a list of functions.
  const hooks = {
    frame: [],
    resync: [],
    stop: [],
    messageExtras: [], // (message) -> node | null, shown under the bubble
    listQuery: [], // (URLSearchParams) -> void, extra inbox filters
    listFilter: [], // (conversation) -> bool, live updates outside the filter leave the list
    listItemExtras: [], // (conversation) -> node | null, in the inbox row
    profileExtras: [], // (current) -> [nodes], appended to the visitor profile
    beforeSend: [], // (entry) -> void, may add attachments to a reply; false = not ready
    afterSend: [], // (entry) -> void
    threadOpened: [], // (current) -> void
  };

  const S = {
    token: sessionStorage.getItem(TOKEN_KEY),
    me: null,
    view: 'me', // me | unassigned | any
    status: 'open', // pending | open | resolved
    list: [], // conversations of the current view, newest activity first
    listCursor: null,
    index: new Map(), // id -> conversation: every unresolved one, for counts and previews
    resolvedTotal: null,
    details: new Map(), // conversation id -> {visitor, last} (lazy)
    names: new Map(), // agent id -> name
    agents: null, // admin only: for transfer
    unread: new Set(),
    typing: new Map(), // conversation id -> {label, timer}
    current: null,
    outbox: [],
    alerts: localStorage.getItem(ALERTS_KEY) === 'on',
  };

  // -------------------------------------------------------------------------------------
  // Helpers
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

  function randomId() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return 'c-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function fmtTime(iso) {
    if (!iso) return '';
    const d = new Date(iso);
    if (isNaN(d)) return '';
    const today = new Date().toDateString() === d.toDateString();
    return today
      ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })
      : d.toLocaleDateString([], { month: 'short', day: 'numeric' }) + ' ' + d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function fmtAgo(iso) {
    const t = Date.parse(iso);
    if (isNaN(t)) return '';
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return 'just now';
    if (s < 3600) return Math.floor(s / 60) + ' min ago';
    if (s < 86400) return Math.floor(s / 3600) + ' h ago';
    return Math.floor(s / 86400) + ' d ago';
  }

  function visitorName(convId, visitorId) {
    const d = S.details.get(convId);
    const v = d && d.visitor;
    if (v && v.name) return v.name;
    if (v && v.email) return v.email;
    return 'Visitor ' + String((v && v.id) || visitorId || '').slice(0, 6);
  }

  function agentName(id) {
    if (!id) return 'Agent';
    if (S.me && id === S.me.id) return S.me.name;
    return S.names.get(id) || 'Agent';
  }

  function rememberAssignee(c) {
    if (c && c.assignee) S.names.set(c.assignee.id, c.assignee.name);
  }

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function api(method, path, body) {
    const headers = { authorization: 'Bearer ' + S.token };
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    try { data = await res.json(); } catch (_) { /* 204 */ }
    if (!res.ok) {
      const e = (data && data.error) || {};
      if (res.status === 401 && S.token) signOut('Your session ended. Please sign in again.');
      throw new ApiError(res.status, e.code || 'http_' + res.status, e.message || res.statusText);
    }
    return data;
  }

  // -------------------------------------------------------------------------------------
  // Sign in / out
  // -------------------------------------------------------------------------------------
  function showLogin(message) {
    $('app').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('login-email').focus();
  }

  $('login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const button = e.target.querySelector('button');
    button.disabled = true;
    $('login-error').textContent = '';
    try {
      const res = await fetch('/api/auth/login', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ email: $('login-email').value.trim(), password: $('login-password').value }),
      });
      const data = await res.json().catch(() => null);
      if (!res.ok) {
        const msg = res.status === 429
          ? 'Too many attempts. Wait a few minutes and try again.'
          : (data && data.error && data.error.message) || 'Sign-in failed.';
        $('login-error').textContent = res.status === 401 ? 'Wrong email or password.' : msg;
        return;
      }
      S.token = data.token;
      sessionStorage.setItem(TOKEN_KEY, data.token);
      $('login-password').value = '';
      start(data.agent);
    } catch (_) {
      $('login-error').textContent = 'Cannot reach the server. Try again.';
    } finally {
      button.disabled = false;
    }
  });

  function signOut(message) {
    const token = S.token;
    S.token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    live.stop();
    for (const h of hooks.stop) h();
    if (token && !message) {
      fetch('/api/auth/logout', { method: 'POST', headers: { authorization: 'Bearer ' + token } }).catch(() => {});
    }
    S.current = null;
    showLogin(message);
  }
  $('logout').addEventListener('click', () => signOut());

  // -------------------------------------------------------------------------------------
  // Live connection
  // -------------------------------------------------------------------------------------
  const live = (function () {
    let sock = null;
    let attempt = 0;
    let timer = null;
    let keepalive = null;
    let lastFrame = 0;
    let stopped = true;

    function setConn(state) {
      const c = $('conn');
      c.dataset.state = state;
      c.textContent = state === 'live' ? 'Live' : state === 'connecting' ? 'Connecting…' : 'Reconnecting…';
    }

    function connect() {
      clearTimeout(timer);
      if (stopped || !S.token) return;
      const u = new URL('/ws/agent', location.href);
      u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
      u.searchParams.set('token', S.token);
      if (!sock) setConn(attempt ? 'reconnecting' : 'connecting');
      const s = new WebSocket(u.href);
      sock = s;
      s.onopen = () => {
        attempt = 0;
        lastFrame = Date.now();
        setConn('live');
        resync(); // whatever happened while we were away
      };
      s.onmessage = (ev) => {
        lastFrame = Date.now();
        let f;
        try { f = JSON.parse(ev.data); } catch (_) { return; }
        if (f && typeof f === 'object') onFrame(f);
      };
      s.onclose = () => {
        if (sock !== s) return;
        sock = null;
        if (stopped) return;
        setConn('reconnecting');
        attempt++;
        // A refused handshake looks like any close: check the token.
        if (attempt % 3 === 0) api('GET', '/api/me').catch(() => {});
        const delay = Math.min(15000, 500 * 2 ** Math.min(attempt - 1, 5)) * (0.75 + Math.random() * 0.5);
        timer = setTimeout(connect, delay);
      };
    }

    return {
      start() {
        stopped = false;
        attempt = 0;
        connect();
        clearInterval(keepalive);
        keepalive = setInterval(() => {
          if (!sock || sock.readyState !== WebSocket.OPEN) return;
          if (Date.now() - lastFrame > DEAD_AFTER_MS) { sock.close(); return; }
          sock.send('{"type":"ping"}');
        }, KEEPALIVE_MS);
      },
      stop() {
        stopped = true;
        clearTimeout(timer);
        clearInterval(keepalive);
        if (sock) { const s = sock; sock = null; s.close(1000); }
      },
      send(frame) {
        if (!sock || sock.readyState !== WebSocket.OPEN) return false;
        sock.send(JSON.stringify(frame));
        return true;
      },
      kick() { if (!stopped && !sock) { attempt = 0; connect(); } },
    };
  })();

  window.addEventListener('online', () => live.kick());

  function onFrame(f) {
    for (const h of hooks.frame) h(f);
    switch (f.type) {
      case 'conversation.created':
        upsertConversation(f.conversation);
        // Not for the conversation this agent just opened by greeting a visitor.
        if (!(f.conversation && f.conversation.assignee && S.me && f.conversation.assignee.id === S.me.id)) {
          notify('New conversation', 'A visitor started a conversation.', f.conversation_id);
        }
        break;
      case 'conversation.updated':
        upsertConversation(f.conversation);
        break;
      case 'message.created':
        onMessage(f.message);
        break;
      case 'typing':
        onTyping(f);
        break;
      case 'message.read':
        if (f.sender_type === 'visitor' && S.current && S.current.id === f.conversation_id) {
          S.current.visitorRead = Math.max(S.current.visitorRead, f.up_to_seq);
          tidyThread();
        }
        break;
      case 'presence.update':
        if (S.me && f.agent_id === S.me.id) setPresenceUi(f.status);
        break;
      default:
        break; // agent.welcome, pong, error
    }
  }

  // -------------------------------------------------------------------------------------
  // Inbox: counts, views, list
  // -------------------------------------------------------------------------------------
  function inView(c, view) {
    if (view === 'any') return true;
    if (view === 'unassigned') return !c.assignee;
    return !!(c.assignee && S.me && c.assignee.id === S.me.id);
  }
  function matches(c) {
    return c.status === S.status && inView(c, S.view) && hooks.listFilter.every((f) => f(c));
  }
  function byActivity(a, b) {
    return (Date.parse(b.updated_at) || 0) - (Date.parse(a.updated_at) || 0) || (a.id < b.id ? 1 : -1);
  }

  /** Every unresolved conversation (for counts), plus the resolved total. */
  async function loadIndex() {
    const fresh = new Map();
    for (const status of ['pending', 'open']) {
      let cursor = null;
      for (let page = 0; page < 10; page++) {
        const q = new URLSearchParams({ status, assignee: 'any', limit: '200' });
        if (cursor) q.set('cursor', cursor);
        const r = await api('GET', '/api/conversations?' + q);
        for (const c of r.items) { fresh.set(c.id, c); rememberAssignee(c); }
        cursor = r.next_cursor;
        if (!cursor) break;
      }
    }
    S.index = fresh;
    try {
      const stats = await api('GET', '/api/stats');
      S.resolvedTotal = stats.resolved;
    } catch (_) { S.resolvedTotal = null; }
    renderCounts();
  }

  function renderCounts() {
    const counts = { me: 0, unassigned: 0, any: 0, pending: 0, open: 0 };
    for (const c of S.index.values()) {
      if (c.status === 'resolved') continue;
      for (const v of ['me', 'unassigned', 'any']) if (inView(c, v)) counts[v]++;
      if (inView(c, S.view)) counts[c.status]++;
    }
    counts.resolved = S.view === 'any' && S.resolvedTotal !== null ? S.resolvedTotal : '';
    for (const span of document.querySelectorAll('[data-count]')) {
      const n = counts[span.dataset.count];
      span.textContent = n === '' || n === undefined ? '' : String(n);
    }
    for (const b of document.querySelectorAll('[data-view]')) b.setAttribute('aria-current', String(b.dataset.view === S.view));
    for (const b of document.querySelectorAll('[data-status]')) b.setAttribute('aria-current', String(b.dataset.status === S.status));
  }

  let listGeneration = 0;
  async function loadList(more) {
    const gen = more ? listGeneration : ++listGeneration;
    const q = new URLSearchParams({ status: S.status, assignee: S.view, limit: String(LIST_PAGE) });
    for (const f of hooks.listQuery) f(q);
    if (more && S.listCursor) q.set('cursor', S.listCursor);
    const r = await api('GET', '/api/conversations?' + q);
    if (gen !== listGeneration) return; // the view changed meanwhile
    const items = more ? S.list.concat(r.items) : r.items;
    const seen = new Set();
    S.list = items.filter((c) => !seen.has(c.id) && seen.add(c.id));
    S.listCursor = r.next_cursor;
    for (const c of r.items) rememberAssignee(c);
    renderList();
  }

  function upsertConversation(c) {
    if (!c || !c.id) return;
    rememberAssignee(c);
    const known = S.index.get(c.id) || S.list.find((x) => x.id === c.id);
    // Frames that do not carry labels leave the known ones in place.
    if (c.labels === undefined && known && known.labels) c = Object.assign({}, c, { labels: known.labels });
    if (known && Date.parse(known.updated_at) > Date.parse(c.updated_at) && known.status === c.status) {
      c = Object.assign({}, c, { updated_at: known.updated_at, last_seq: Math.max(known.last_seq, c.last_seq) });
    }
    if (c.status === 'resolved') S.index.delete(c.id);
    else S.index.set(c.id, c);
    S.list = S.list.filter((x) => x.id !== c.id);
    if (matches(c)) {
      S.list.push(c);
      S.list.sort(byActivity);
    }
    if (S.current && S.current.id === c.id) {
      S.current.conv = c;
      renderThreadHead();
      renderProfile();
    }
    renderCounts();
    renderList();
  }

  function renderList() {
    const ul = $('conversations');
    const items = S.list.map((c) => {
      const d = S.details.get(c.id);
      if (!d) loadDetails(c.id);
      const typing = S.typing.get(c.id);
      const lastText = d && d.last ? d.last.body || (d.last.attachments || []).map((f) => '📎 ' + f.name).join(' ') : '';
      const preview = typing ? typing.label + ' is typing…' : d && d.last ? (d.last.private ? 'Note: ' : d.last.sender_type === 'agent' ? 'You: ' : '') + lastText : '';
      const selected = S.current && S.current.id === c.id;
      const li = el('li', { class: 'conv' + (selected ? ' selected' : '') + (S.unread.has(c.id) ? ' unread' : ''), 'data-id': c.id }, [
        el('button', {
          type: 'button',
          role: 'option',
          'aria-selected': String(!!selected),
          onclick: () => openConversation(c.id),
        }, [
          el('span', { class: 'row1' }, [
            el('span', { class: 'cname', text: visitorName(c.id, c.visitor_id) }),
            el('span', { class: 'ctime', text: fmtTime(c.updated_at) }),
          ]),
          el('span', { class: 'row2' }, [
            el('span', { class: 'preview' + (typing ? ' is-typing' : ''), text: preview }),
            S.unread.has(c.id) ? el('span', { class: 'unread-dot', 'aria-label': 'unread' }) : null,
          ]),
          el('span', { class: 'row3' }, [
            el('span', { class: 'chip ' + c.status, text: c.status }),
            el('span', { class: 'assignee', text: c.assignee ? c.assignee.name : 'Unassigned' }),
            ...hooks.listItemExtras.map((f) => f(c)),
          ]),
        ]),
      ]);
      return li;
    });
    ul.replaceChildren(...items);
    $('list-empty').hidden = S.list.length > 0;
    $('list-more').hidden = !S.listCursor;
    const viewName = { me: 'Mine', unassigned: 'Unassigned', any: 'All' }[S.view];
    $('list-title').textContent = viewName + ' · ' + S.status;
  }

  const detailQueue = [];
  let detailsRunning = 0;
  function loadDetails(id) {
    if (S.details.has(id)) return;
    S.details.set(id, { visitor: null, last: null, loading: true });
    detailQueue.push(id);
    pumpDetails();
  }
  function pumpDetails() {
    while (detailsRunning < 4 && detailQueue.length) {
      const id = detailQueue.shift();
      detailsRunning++;
      Promise.all([
        api('GET', '/api/conversations/' + id),
        api('GET', '/api/conversations/' + id + '/messages?before_seq=' + LAST_SEQ + '&limit=1'),
      ]).then(([conv, msgs]) => {
        const d = S.details.get(id) || {};
        d.visitor = conv.visitor;
        const last = msgs.items[msgs.items.length - 1];
        if (last && (!d.last || d.last.seq < last.seq)) d.last = last;
        d.loading = false;
        S.details.set(id, d);
      }).catch(() => {
        S.details.delete(id);
      }).finally(() => {
        detailsRunning--;
        scheduleListRender();
        pumpDetails();
      });
    }
  }
  let listRenderPending = false;
  function scheduleListRender() {
    if (listRenderPending) return;
    listRenderPending = true;
    requestAnimationFrame(() => { listRenderPending = false; renderList(); if (S.current) renderThreadHead(); });
  }

  for (const b of document.querySelectorAll('[data-view]')) {
    b.addEventListener('click', () => { S.view = b.dataset.view; renderCounts(); loadList().catch(showError); });
  }
  for (const b of document.querySelectorAll('[data-status]')) {
    b.addEventListener('click', () => { S.status = b.dataset.status; renderCounts(); loadList().catch(showError); });
  }
  $('list-more').addEventListener('click', () => loadList(true).catch(showError));

  // -------------------------------------------------------------------------------------
  // Messages arriving live
  // -------------------------------------------------------------------------------------
  function onMessage(m) {
    if (!m) return;
    const d = S.details.get(m.conversation_id);
    if (d && (!d.last || d.last.seq < m.seq)) d.last = m;
    const c = S.index.get(m.conversation_id) || S.list.find((x) => x.id === m.conversation_id);
    if (c) {
      const bumped = Object.assign({}, c, { last_seq: Math.max(c.last_seq || 0, m.seq), updated_at: m.created_at });
      if (bumped.status !== 'resolved') S.index.set(c.id, bumped);
      S.list = S.list.map((x) => (x.id === c.id ? bumped : x)).sort(byActivity);
    } else {
      // A conversation we have not seen (created while we were away): fetch it.
      api('GET', '/api/conversations/' + m.conversation_id).then((conv) => {
        delete conv.visitor;
        upsertConversation(conv);
      }).catch(() => {});
    }
    if (m.sender_type === 'visitor' && S.typing.has(m.conversation_id)) clearTyping(m.conversation_id);
    const viewing = S.current && S.current.id === m.conversation_id;
    if (viewing) addThreadMessage(m, true);
    if (m.sender_type === 'visitor') {
      if (!viewing || document.visibilityState !== 'visible') {
        if (!viewing) S.unread.add(m.conversation_id);
        notify('New message from ' + visitorName(m.conversation_id), m.body, m.conversation_id);
      }
    }
    scheduleListRender();
  }

  function onTyping(f) {
    if (f.sender_type === 'agent' && S.me && f.sender_id === S.me.id) return;
    const id = f.conversation_id;
    if (!f.on) { clearTyping(id); return; }
    const label = f.sender_type === 'visitor' ? visitorName(id) : agentName(f.sender_id);
    const prev = S.typing.get(id);
    if (prev) clearTimeout(prev.timer);
    S.typing.set(id, { label, timer: setTimeout(() => clearTyping(id), THEIR_TYPING_MS) });
    renderTyping();
    scheduleListRender();
  }
  function clearTyping(id) {
    const prev = S.typing.get(id);
    if (prev) clearTimeout(prev.timer);
    S.typing.delete(id);
    renderTyping();
    scheduleListRender();
  }
  function renderTyping() {
    const t = S.current && S.typing.get(S.current.id);
    const box = $('visitor-typing');
    if (t) {
      box.replaceChildren(
        el('span', { class: 'dots', 'aria-hidden': 'true' }, [el('i'), el('i'), el('i')]),
        el('span', { text: t.label + ' is typing…' }));
    } else {
      box.replaceChildren();
    }
  }

  // -------------------------------------------------------------------------------------
  // The open conversation
  // -------------------------------------------------------------------------------------
  async function openConversation(id) {
    if (S.current && S.current.id === id) return;
    typing.off();
    const conv = S.list.find((c) => c.id === id) || S.index.get(id) || null;
    S.current = {
      id, conv, visitor: null,
      bySeq: new Map(), minSeq: Infinity, maxSeq: 0,
      more: false, loadingOlder: false, sentRead: 0, visitorRead: 0,
    };
    S.unread.delete(id);
    $('thread-empty').hidden = true;
    $('thread-main').hidden = false;
    $('messages').replaceChildren();
    renderOutbox();
    renderTyping();
    renderThreadHead();
    renderProfile();
    renderList();
    const cur = S.current;
    try {
      const [full, page] = await Promise.all([
        api('GET', '/api/conversations/' + id),
        api('GET', '/api/conversations/' + id + '/messages?before_seq=' + LAST_SEQ + '&limit=' + PAGE),
      ]);
      if (S.current !== cur) return;
      cur.visitor = full.visitor;
      const d = S.details.get(id) || {};
      d.visitor = full.visitor;
      S.details.set(id, d);
      delete full.visitor;
      cur.conv = full;
      rememberAssignee(full);
      for (const m of page.items) addThreadMessage(m, false);
      cur.more = page.more;
      renderThreadHead();
      renderProfile();
      for (const f of hooks.threadOpened) f(cur);
      scrollThreadToBottom();
      markRead();
      await fetchAfter(cur); // anything committed while the first page was on its way
    } catch (e) {
      showError(e);
    }
    $('reply-text').focus();
  }

  /** Loads every message after the newest one shown (after a gap or a reconnect). */
  async function fetchAfter(cur) {
    if (cur.fetchingAfter) { cur.fetchAgain = true; return; }
    cur.fetchingAfter = true;
    try {
      for (let i = 0; i < 50; i++) {
        const r = await api('GET', '/api/conversations/' + cur.id + '/messages?after_seq=' + cur.maxSeq + '&limit=200');
        if (S.current !== cur) return;
        for (const m of r.items) addThreadMessage(m, true);
        if (!r.more) break;
      }
    } finally {
      cur.fetchingAfter = false;
      if (cur.fetchAgain) { cur.fetchAgain = false; fetchAfter(cur).catch(() => {}); }
    }
  }

  async function loadOlder() {
    const cur = S.current;
    if (!cur || !cur.more || cur.loadingOlder || cur.minSeq === Infinity) return;
    cur.loadingOlder = true;
    $('older').hidden = false;
    const scroller = $('messages-scroll');
    const before = scroller.scrollHeight - scroller.scrollTop;
    try {
      const r = await api('GET', '/api/conversations/' + cur.id + '/messages?before_seq=' + cur.minSeq + '&limit=' + PAGE);
      if (S.current !== cur) return;
      for (const m of r.items) addThreadMessage(m, false);
      cur.more = r.more;
      scroller.scrollTop = scroller.scrollHeight - before; // keep the reader's place
    } catch (e) {
      showError(e);
    } finally {
      cur.loadingOlder = false;
      $('older').hidden = true;
    }
  }
  $('messages-scroll').addEventListener('scroll', () => {
    if ($('messages-scroll').scrollTop < 80) loadOlder();
  });

  function senderLabel(m) {
    if (m.sender_type === 'visitor') return visitorName(m.conversation_id);
    if (m.sender_type === 'bot') return 'Bot';
    if (m.sender_type === 'system') return '';
    return agentName(m.sender_id);
  }

  function messageItem(m) {
    const kind = m.private ? 'note' : m.sender_type;
    const who = (m.private ? 'Private note · ' : '') + senderLabel(m);
    return el('li', { class: 'msg ' + kind + (m.sender_type === 'agent' ? ' outgoing' : ''), 'data-seq': String(m.seq), 'data-id': m.id }, [
      el('div', { class: 'who', text: who }),
      m.body ? el('div', { class: 'bubble', text: m.body }) : null,
      ...hooks.messageExtras.map((f) => f(m)),
      el('div', { class: 'meta', text: fmtTime(m.created_at) }),
    ]);
  }

  function addThreadMessage(m, live_) {
    const cur = S.current;
    if (!cur || m.conversation_id !== cur.id) return;
    // The outbox entry this message answers is done.
    const i = S.outbox.findIndex((e) => e.id === m.client_msg_id && e.convId === m.conversation_id);
    if (i >= 0 && m.sender_type === 'agent') { S.outbox.splice(i, 1); renderOutbox(); }
    if (cur.bySeq.has(m.seq)) return; // never twice
    const gap = live_ && cur.maxSeq > 0 && m.seq > cur.maxSeq + 1;
    cur.bySeq.set(m.seq, m);
    const scroller = $('messages-scroll');
    const stick = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 100;
    const li = messageItem(m);
    const ol = $('messages');
    let after = ol.lastElementChild;
    while (after && Number(after.dataset.seq) > m.seq) after = after.previousElementSibling;
    if (after) after.after(li);
    else ol.prepend(li);
    cur.minSeq = Math.min(cur.minSeq, m.seq);
    cur.maxSeq = Math.max(cur.maxSeq, m.seq);
    tidyThread();
    if (live_ && (stick || m.sender_type === 'agent')) scrollThreadToBottom();
    if (live_) markRead();
    if (gap) fetchAfter(cur).catch(() => {});
  }

  function tidyThread() {
    const cur = S.current;
    if (!cur) return;
    let prev = '';
    let lastOut = null;
    for (const li of $('messages').children) {
      const who = li.querySelector('.who');
      who.hidden = who.textContent === prev;
      prev = who.textContent;
      if (li.classList.contains('outgoing') && !li.classList.contains('note')) lastOut = li;
    }
    for (const li of $('messages').querySelectorAll('.outgoing')) {
      const m = cur.bySeq.get(Number(li.dataset.seq));
      let text = m ? fmtTime(m.created_at) : '';
      if (li === lastOut && cur.visitorRead >= Number(li.dataset.seq)) text += ' · Seen';
      li.querySelector('.meta').textContent = text;
    }
  }

  function scrollThreadToBottom() {
    const s = $('messages-scroll');
    s.scrollTop = s.scrollHeight;
  }

  function markRead() {
    const cur = S.current;
    if (!cur || document.visibilityState !== 'visible' || cur.maxSeq <= cur.sentRead) return;
    if (live.send({ type: 'read', conversation_id: cur.id, up_to_seq: cur.maxSeq })) cur.sentRead = cur.maxSeq;
  }
  document.addEventListener('visibilitychange', () => {
    markRead();
    if (document.visibilityState === 'visible') live.kick();
  });

  function renderThreadHead() {
    const cur = S.current;
    if (!cur) return;
    const c = cur.conv;
    $('thread-title').textContent = visitorName(cur.id, c && c.visitor_id);
    const parts = [];
    if (c) {
      parts.push(c.status.charAt(0).toUpperCase() + c.status.slice(1));
      parts.push(c.assignee ? 'Assigned to ' + c.assignee.name : 'Unassigned');
      parts.push('started ' + fmtAgo(c.created_at));
    }
    $('thread-sub').textContent = parts.join(' · ');
    const mine = !!(c && c.assignee && S.me && c.assignee.id === S.me.id);
    $('act-claim').hidden = !c || mine || c.status === 'resolved';
    $('act-claim').textContent = c && c.assignee ? 'Take over' : 'Claim';
    $('act-resolve').hidden = !c || c.status === 'resolved';
    $('act-reopen').hidden = !c || c.status !== 'resolved';
    renderTransfer();
  }

  function renderTransfer() {
    const wrap = $('transfer-wrap');
    const cur = S.current;
    if (!S.agents || !cur || !cur.conv) { wrap.hidden = true; return; }
    const others = S.agents.filter((a) => !a.disabled && !(cur.conv.assignee && cur.conv.assignee.id === a.id));
    wrap.hidden = others.length === 0;
    const sel = $('act-transfer');
    sel.replaceChildren(
      el('option', { value: '', text: 'Transfer to…' }),
      ...others.map((a) => el('option', { value: a.id, text: a.name + ' (' + a.status + ')' })));
    sel.value = '';
  }

  async function act(path, body) {
    const cur = S.current;
    if (!cur) return;
    try {
      const conv = await api('POST', '/api/conversations/' + cur.id + path, body);
      upsertConversation(conv);
    } catch (e) {
      showError(e);
    }
  }
  $('act-claim').addEventListener('click', () => act('/assign', {}));
  $('act-resolve').addEventListener('click', () => act('/resolve'));
  $('act-reopen').addEventListener('click', () => act('/reopen'));
  $('act-transfer').addEventListener('change', (e) => {
    if (e.target.value) act('/assign', { agent_id: e.target.value });
  });

  function renderProfile() {
    const dl = $('profile-fields');
    const cur = S.current;
    if (!cur) { dl.replaceChildren(); return; }
    const v = cur.visitor || {};
    const a = v.attributes || {};
    const c = cur.conv || {};
    const rows = [];
    const add = (label, value, node) => {
      if (!value && !node) return;
      rows.push(el('dt', { text: label }), el('dd', {}, [node || document.createTextNode(String(value))]));
    };
    add('Name', v.name || '—');
    add('Email', v.email || '—');
    add('User id', v.user_id ? v.user_id + ' · verified' : '');
    add('Page', null, linkOrText(a.page_url));
    add('Page title', a.page_title);
    add('Referrer', null, linkOrText(a.referrer));
    add('Language', a.language);
    add('Time zone', a.timezone);
    add('Browser', a.user_agent);
    add('Screen', a.screen);
    add('First seen', v.created_at ? fmtTime(v.created_at) : '');
    add('Last seen', v.last_seen_at ? fmtAgo(v.last_seen_at) : '');
    add('Conversation', c.created_at ? 'started ' + fmtTime(c.created_at) : '');
    add('First response', c.first_response_at ? fmtTime(c.first_response_at) : '');
    if (c.rating) add('Rating', '★'.repeat(c.rating) + (c.rating_comment ? ' — ' + c.rating_comment : ''));
    add('Visitor id', v.id);
    for (const f of hooks.profileExtras) rows.push(...(f(cur) || []));
    dl.replaceChildren(...rows);
  }

  /** A link only for http(s) URLs; anything else (javascript:, data:) stays text. */
  function linkOrText(url) {
    if (!url) return null;
    try {
      const u = new URL(url);
      if (u.protocol === 'http:' || u.protocol === 'https:') {
        return el('a', { href: u.href, target: '_blank', rel: 'noopener noreferrer nofollow', text: url });
      }
    } catch (_) { /* not a URL */ }
    return document.createTextNode(String(url));
  }

  // -------------------------------------------------------------------------------------
  // Replying
  // -------------------------------------------------------------------------------------
  const typing = (function () {
    let on = false;
    let sentAt = 0;
    let convId = null;
    let timer = null;
    function off() {
      clearTimeout(timer);
      if (on && convId) live.send({ type: 'typing', conversation_id: convId, on: false });
      on = false;
    }
    return {
      ping() {
        const cur = S.current;
        if (!cur || noteMode()) { off(); return; }
        const now = Date.now();
        if (convId !== cur.id) { off(); convId = cur.id; }
        if (!on || now - sentAt > 2500) {
          if (live.send({ type: 'typing', conversation_id: cur.id, on: true })) { on = true; sentAt = now; }
        }
        clearTimeout(timer);
        timer = setTimeout(off, TYPING_IDLE_MS);
      },
      off,
    };
  })();

  function noteMode() {
    return document.querySelector('input[name="mode"]:checked').value === 'note';
  }
  for (const r of document.querySelectorAll('input[name="mode"]')) {
    r.addEventListener('change', () => {
      $('reply').classList.toggle('note-mode', noteMode());
      $('reply-text').setAttribute('aria-label', noteMode() ? 'Private note (agents only)' : 'Reply to the visitor');
      $('reply-hint').textContent = noteMode() ? 'Only agents see notes.' : '';
      $('reply-send').textContent = noteMode() ? 'Add note' : 'Send';
      if (noteMode()) typing.off();
    });
  }

  $('reply-text').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
      e.preventDefault();
      sendReply();
    }
  });
  $('reply-text').addEventListener('input', () => {
    if ($('reply-text').value.trim()) typing.ping();
    else typing.off();
  });
  $('reply').addEventListener('submit', (e) => { e.preventDefault(); sendReply(); });

  function sendReply() {
    const cur = S.current;
    const body = $('reply-text').value.trim();
    if (!cur) return;
    if ([...body].length > 4000) { $('reply-hint').textContent = 'At most 4000 characters.'; return; }
    const entry = { id: randomId(), convId: cur.id, body, private: noteMode(), failed: null, tries: 0, attachments: [] };
    if (hooks.beforeSend.some((f) => f(entry) === false)) return;
    if (!body && !entry.attachments.length) return;
    for (const f of hooks.afterSend) f(entry);
    S.outbox.push(entry);
    $('reply-text').value = '';
    typing.off();
    renderOutbox();
    scrollThreadToBottom();
    post(entry);
  }

  async function post(entry) {
    entry.tries++;
    try {
      const m = await api('POST', '/api/conversations/' + entry.convId + '/messages', {
        client_msg_id: entry.id, body: entry.body, private: entry.private,
        attachments: entry.attachments.map((a) => a.id),
      });
      const i = S.outbox.indexOf(entry);
      if (i >= 0) S.outbox.splice(i, 1);
      renderOutbox();
      onMessage(m);
    } catch (e) {
      if (!S.token) return;
      const retriable = !(e instanceof ApiError) || e.status >= 500 || e.status === 429 || e.status === 408;
      if (retriable) {
        setTimeout(() => { if (S.outbox.includes(entry)) post(entry); }, Math.min(10000, 500 * 2 ** Math.min(entry.tries, 5)));
      } else {
        entry.failed = e.message;
        renderOutbox();
      }
    }
  }

  function renderOutbox() {
    const cur = S.current;
    const items = S.outbox.filter((e) => cur && e.convId === cur.id).map((e) => {
      const meta = el('div', { class: 'meta' });
      if (e.failed) {
        meta.append(document.createTextNode('Not sent: ' + e.failed + ' · '));
        meta.append(el('button', { type: 'button', class: 'link', text: 'Retry', onclick: () => { e.failed = null; e.tries = 0; renderOutbox(); post(e); } }));
      } else {
        meta.textContent = 'Sending…';
      }
      return el('li', { class: 'msg outgoing pending ' + (e.private ? 'note' : 'agent') + (e.failed ? ' failed' : '') }, [
        e.body ? el('div', { class: 'bubble', text: e.body }) : null,
        e.attachments.length ? el('div', { class: 'bubble', text: e.attachments.map((a) => '📎 ' + a.name).join('\n') }) : null,
        meta,
      ]);
    });
    $('outbox').replaceChildren(...items);
  }

  // -------------------------------------------------------------------------------------
  // Presence and alerts
  // -------------------------------------------------------------------------------------
  function setPresenceUi(status) {
    $('presence').value = status;
    $('presence-dot').dataset.status = status;
    if (S.me) S.me.status = status;
  }
  $('presence').addEventListener('change', async (e) => {
    const want = e.target.value;
    try {
      const me = await api('PUT', '/api/me/status', { status: want });
      setPresenceUi((me && me.status) || want);
    } catch (err) {
      showError(err);
      setPresenceUi(S.me ? S.me.status : 'offline');
    }
  });

  let audio = null;
  function renderAlerts() {
    const b = $('alerts');
    b.setAttribute('aria-pressed', String(S.alerts));
    b.textContent = S.alerts ? 'Alerts on' : 'Alerts off';
  }
  $('alerts').addEventListener('click', () => {
    S.alerts = !S.alerts;
    localStorage.setItem(ALERTS_KEY, S.alerts ? 'on' : 'off');
    if (S.alerts) {
      try { audio = audio || new AudioContext(); } catch (_) { audio = null; }
      if (window.Notification && Notification.permission === 'default') Notification.requestPermission().catch(() => {});
    }
    renderAlerts();
  });

  // Browsers start sound only after a user gesture: with alerts left on from an earlier
  // visit, the first click or key press anywhere readies it.
  function readyAudio() {
    if (!S.alerts) return;
    try {
      audio = audio || new AudioContext();
      if (audio.state === 'suspended') audio.resume().catch(() => {});
    } catch (_) { audio = null; }
  }
  document.addEventListener('pointerdown', readyAudio, true);
  document.addEventListener('keydown', readyAudio, true);

  function notify(title, body, convId) {
    if (!S.alerts) return;
    if (audio) {
      try {
        const o = audio.createOscillator();
        const g = audio.createGain();
        o.frequency.value = 880;
        g.gain.setValueAtTime(0.08, audio.currentTime);
        g.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.25);
        o.connect(g).connect(audio.destination);
        o.start();
        o.stop(audio.currentTime + 0.25);
      } catch (_) { /* no sound */ }
    }
    if (window.Notification && Notification.permission === 'granted' && document.visibilityState !== 'visible') {
      try {
        const n = new Notification(title, { body: String(body || '').slice(0, 140), tag: convId || 'kefu' });
        n.onclick = () => { window.focus(); if (convId) openConversation(convId); n.close(); };
      } catch (_) { /* not allowed here */ }
    }
  }

  // -------------------------------------------------------------------------------------
  // Start and resync
  // -------------------------------------------------------------------------------------
  let errorTimer = null;
  function showError(e) {
    if (e instanceof ApiError && e.status === 401) return;
    const c = $('conn');
    const prev = c.textContent;
    c.dataset.error = 'true';
    c.textContent = (e && e.message) || 'Something went wrong';
    clearTimeout(errorTimer);
    errorTimer = setTimeout(() => { delete c.dataset.error; c.textContent = prev; }, 4000);
  }

  async function resync() {
    try {
      await Promise.all([loadIndex(), loadList()]);
      const cur = S.current;
      if (cur) {
        const full = await api('GET', '/api/conversations/' + cur.id);
        if (S.current === cur) {
          cur.visitor = full.visitor;
          delete full.visitor;
          cur.conv = full;
          renderThreadHead();
          renderProfile();
          await fetchAfter(cur);
        }
      }
      for (const e of S.outbox) if (!e.failed) post(e);
    } catch (e) {
      showError(e);
    }
    for (const h of hooks.resync) h();
  }

  async function start(agent) {
    S.me = agent;
    S.names.set(agent.id, agent.name);
    $('login').hidden = true;
    $('app').hidden = false;
    $('me-name').textContent = agent.name;
    setPresenceUi(agent.status);
    renderAlerts();
    renderCounts();
    if (agent.role === 'admin') {
      api('GET', '/api/agents').then((r) => {
        S.agents = r.items;
        for (const a of r.items) S.names.set(a.id, a.name);
        renderTransfer();
      }).catch(() => { S.agents = null; });
    }
    resync();
    live.start();
    // Feature files (web/console-*.js) hook in here: they get the signed-in agent and the
    // authenticated API helper.
    window.dispatchEvent(new CustomEvent('kefu:signed-in', { detail: { agent, api, el } }));
  }

  async function boot() {
    if (!S.token) { showLogin(); return; }
    try {
      start(await api('GET', '/api/me'));
    } catch (e) {
      if (!(e instanceof ApiError)) {
        showLogin('Cannot reach the server. Try again.');
      }
    }
  }
  window.kefuConsole = {
    S, hooks, api, el, $, ApiError, fmtTime, fmtAgo, linkOrText,
    openConversation, loadList, renderList, renderProfile, upsertConversation, showError,
    reloadCurrent: async () => {
      const cur = S.current;
      if (!cur) return;
      const full = await api('GET', '/api/conversations/' + cur.id);
      if (S.current !== cur) return;
      cur.visitor = full.visitor;
      delete full.visitor;
      cur.conv = full;
      renderThreadHead();
      renderProfile();
    },
  };
  boot();
})();
