/*
 * kefu agent console: visitors online now, and greeting one first.
 *
 * The list comes from GET /api/visitors/online (every node's visitors) and stays live with
 * the agent socket's visitor.online {visitors} / visitor.offline {visitor_ids} frames
 * (batches); every (re)connection reloads
 * it, so a lost connection never leaves it stale. "Greet" sends
 * POST /api/visitors/{id}/greet: the conversation is created assigned to this agent and
 * the message reaches the visitor's widget at once. Visitor text goes on screen with
 * textContent only.
 */
(function () {
  'use strict';

  const K = window.kefuConsole;
  if (!K) return;
  const { el, api, S } = K;
  const $ = (id) => document.getElementById(id);

  const V = {
    items: new Map(), // visitor id -> online record
    active: false, // the pane is showing
    greeting: null, // visitor id whose greeting form is open
    draft: '',
    loaded: false,
  };

  // ---------------------------------------------------------------------------------------
  // Data
  // ---------------------------------------------------------------------------------------
  let loading = null;
  async function load() {
    if (!S.token) return;
    if (loading) return loading;
    loading = (async () => {
      try {
        const r = await api('GET', '/api/visitors/online?limit=500');
        V.items = new Map(r.items.map((v) => [v.id, v]));
        V.loaded = true;
        render();
      } catch (e) {
        K.showError(e);
      } finally {
        loading = null;
      }
    })();
    return loading;
  }

  function upsert(v, quiet) {
    const known = V.items.get(v.id);
    if (known) {
      // The same visitor on several nodes: earliest visit, newest page.
      if (Date.parse(known.visit_started_at) < Date.parse(v.visit_started_at)) v.visit_started_at = known.visit_started_at;
      if (!v.conversation && known.conversation) v.conversation = known.conversation;
    }
    V.items.set(v.id, v);
    if (!quiet) render();
  }

  K.hooks.frame.push((f) => {
    switch (f.type) {
      case 'visitor.online': // a batch: arrivals and page changes
        for (const v of f.visitors || []) if (v && v.id) upsert(v, true);
        render();
        break;
      case 'visitor.offline': {
        let changed = false;
        for (const id of f.visitor_ids || []) {
          changed = V.items.delete(id) || changed;
          if (V.greeting === id) V.greeting = null;
        }
        if (changed) render();
        break;
      }
      case 'conversation.created':
      case 'conversation.updated': {
        const c = f.conversation;
        const v = c && V.items.get(c.visitor_id);
        if (v && (!v.conversation || v.conversation.id === c.id || Date.parse(c.created_at) >= Date.parse(v.conversation.created_at))) {
          v.conversation = c;
          render();
        }
        break;
      }
      default:
        break;
    }
  });
  K.hooks.resync.push(load);
  K.hooks.stop.push(() => { V.items.clear(); V.greeting = null; V.loaded = false; show(false); });

  // ---------------------------------------------------------------------------------------
  // Rendering
  // ---------------------------------------------------------------------------------------
  function who(v) {
    return v.name || v.email || 'Visitor ' + String(v.id).slice(0, 6);
  }

  function onSite(v) {
    const t = Date.parse(v.visit_started_at);
    if (isNaN(t)) return '';
    const s = Math.max(0, Math.floor((Date.now() - t) / 1000));
    if (s < 60) return s + ' s';
    if (s < 3600) return Math.floor(s / 60) + ' min';
    return Math.floor(s / 3600) + ' h ' + (Math.floor(s / 60) % 60) + ' min';
  }

  /** The visitor's conversation still in progress (pending or open), if any. */
  function activeConversation(v) {
    for (const c of S.index.values()) {
      if (c.visitor_id === v.id && c.status !== 'resolved') return c;
    }
    const c = v.conversation;
    return c && c.status !== 'resolved' ? c : null;
  }

  function pageText(v) {
    if (v.page_title && v.page_url) return v.page_title;
    return v.page_url || 'Page not known yet';
  }

  function item(v) {
    const conv = activeConversation(v);
    const li = el('li', { class: 'visitor', 'data-visitor': v.id });
    const page = v.page_url
      ? el('a', { class: 'v-page', href: safeUrl(v.page_url), target: '_blank', rel: 'noopener noreferrer nofollow', title: v.page_url, text: pageText(v) })
      : el('span', { class: 'v-page', text: pageText(v) });
    if (!safeUrl(v.page_url || '')) page.removeAttribute('href');
    li.append(
      el('div', { class: 'v-row1' }, [
        el('span', { class: 'v-dot', 'aria-hidden': 'true' }),
        el('span', { class: 'v-name', text: who(v) }),
        el('span', { class: 'v-time', title: 'Time on site', text: onSite(v) }),
      ]),
      el('div', { class: 'v-row2' }, [page, v.page_title ? el('span', { class: 'v-path', text: pathOf(v.page_url) }) : null]),
      el('div', { class: 'v-row3' }, [
        el('span', { class: 'v-site', text: v.site_name || '' }),
        v.referrer ? el('span', { class: 'v-ref', title: v.referrer, text: 'from ' + hostOf(v.referrer) }) : null,
      ]),
    );
    const actions = el('div', { class: 'v-actions' });
    if (conv) {
      const label = conv.assignee ? (conv.status === 'open' ? 'Chatting with ' : 'Waiting · ') + conv.assignee.name : 'Waiting in the queue';
      actions.append(
        el('span', { class: 'v-status', text: label }),
        el('button', { type: 'button', class: 'v-open', text: 'Open conversation', onclick: () => openConversation(conv.id) }),
      );
    } else if (V.greeting === v.id) {
      actions.append(greetForm(v));
    } else {
      actions.append(el('button', {
        type: 'button',
        class: 'primary v-greet',
        text: 'Greet',
        'aria-label': 'Greet ' + who(v),
        onclick: () => { V.greeting = v.id; V.draft = ''; render(); focusDraft(); },
      }));
    }
    li.append(actions);
    return li;
  }

  function greetForm(v) {
    const text = el('textarea', {
      class: 'v-draft',
      rows: '2',
      'aria-label': 'Greeting for ' + who(v),
      placeholder: 'Hi! Can I help you find anything?',
    });
    text.value = V.draft;
    const err = el('p', { class: 'v-error', role: 'alert' });
    const send = el('button', { type: 'submit', class: 'primary', text: 'Send greeting' });
    const form = el('form', { class: 'v-form', 'aria-label': 'Greet ' + who(v) }, [
      text,
      el('div', { class: 'v-form-bar' }, [
        err,
        el('button', { type: 'button', class: 'ghost', text: 'Cancel', onclick: () => { V.greeting = null; render(); } }),
        send,
      ]),
    ]);
    text.addEventListener('input', () => { V.draft = text.value; });
    text.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && e.keyCode !== 229) {
        e.preventDefault();
        form.requestSubmit();
      }
      if (e.key === 'Escape') { V.greeting = null; render(); }
    });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const body = text.value.trim();
      if (!body) { err.textContent = 'Write a greeting first.'; return; }
      send.disabled = true;
      err.textContent = '';
      try {
        const r = await api('POST', '/api/visitors/' + encodeURIComponent(v.id) + '/greet', {
          body, client_msg_id: 'g-' + Date.now().toString(36) + Math.random().toString(36).slice(2, 8),
        });
        V.greeting = null;
        V.draft = '';
        v.conversation = r.conversation;
        render();
        openConversation(r.conversation.id);
      } catch (ex) {
        err.textContent = ex && ex.status === 409 ? ex.message : 'Not sent: ' + ((ex && ex.message) || 'try again');
        send.disabled = false;
      }
    });
    return form;
  }

  function focusDraft() {
    const t = document.querySelector('#visitors .v-draft');
    if (t) t.focus();
  }

  function render() {
    const n = V.items.size;
    $('visitors-count').textContent = V.loaded ? String(n) : '';
    if (!V.active) return;
    const focused = document.activeElement && document.activeElement.classList.contains('v-draft');
    const list = [...V.items.values()].sort((a, b) => (Date.parse(b.visit_started_at) || 0) - (Date.parse(a.visit_started_at) || 0));
    $('visitors').replaceChildren(...list.map(item));
    $('visitors-empty').hidden = n > 0 || !V.loaded;
    if (focused) focusDraft();
  }

  function safeUrl(url) {
    try {
      const u = new URL(url);
      return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : '';
    } catch (_) {
      return '';
    }
  }

  /** The path and query of a page URL (the title says which site). */
  function pathOf(url) {
    try {
      const u = new URL(url);
      return u.pathname + u.search;
    } catch (_) {
      return '';
    }
  }

  function hostOf(url) {
    try {
      return new URL(url).host || url;
    } catch (_) {
      return url;
    }
  }

  // ---------------------------------------------------------------------------------------
  // The pane: in place of the conversation list while "Online now" is picked
  // ---------------------------------------------------------------------------------------
  function show(on) {
    V.active = on;
    $('app').classList.toggle('visitors-on', on);
    $('visitors-pane').hidden = !on;
    document.querySelector('.app > .list-pane:not(.visitors-pane)').hidden = on;
    $('visitors-nav').setAttribute('aria-current', String(on));
    $('thread-empty').textContent = on ? 'Greet a visitor, or pick a conversation.' : 'Pick a conversation on the left.';
    if (on) {
      for (const b of document.querySelectorAll('[data-view], [data-status]')) b.setAttribute('aria-current', 'false');
      render();
      if (!V.loaded) load();
    }
  }

  function openConversation(id) {
    // Back to the conversations, showing this agent's open ones, with this one open.
    show(false);
    const mine = document.querySelector('[data-view="me"]');
    const open = document.querySelector('[data-status="open"]');
    if (S.view !== 'me' && mine) mine.click();
    if (S.status !== 'open' && open) open.click();
    K.openConversation(id);
  }

  $('visitors-nav').addEventListener('click', () => show(true));
  for (const b of document.querySelectorAll('[data-view], [data-status]')) {
    b.addEventListener('click', () => { if (V.active) show(false); });
  }
  // Time on site moves on.
  setInterval(() => {
    if (!V.active || document.visibilityState !== 'visible') return;
    for (const span of document.querySelectorAll('#visitors li[data-visitor] .v-time')) {
      const v = V.items.get(span.closest('li').dataset.visitor);
      if (v) span.textContent = onSite(v);
    }
  }, 5000);
})();
