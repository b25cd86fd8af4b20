/*
 * kefu agent console: workflow features (issue 9), on top of console.js through
 * window.kefuConsole and its hooks.
 *
 * - Attachments: the 📎 button uploads files for the open conversation; the next reply
 *   carries them. Images in messages preview inline, other files download on click. The
 *   bytes are fetched with the agent's bearer token (the download URL alone grants
 *   nothing), then shown from a blob: URL.
 * - Canned responses: typing /shortcut in the reply box opens suggestions; Enter or Tab
 *   inserts the selected one, Escape closes. "Canned responses" in the sidebar manages them.
 * - Labels: a filter in the sidebar, chips in the inbox, add/remove in the visitor panel;
 *   admins create and delete labels.
 * - Custom attributes: shown and edited in the visitor panel.
 * - Search: the box in the top bar searches messages (notes included) and visitors.
 *
 * Everything users wrote is put on screen with textContent (through el()).
 */
(function () {
  'use strict';

  const K = window.kefuConsole;
  if (!K) return;
  const { S, hooks, api, el, $ } = K;

  const IMAGE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp'];
  // Attribute keys the widget sets by itself and console.js already shows.
  const PAGE_KEYS = new Set(['page_url', 'page_title', 'referrer', 'language', 'user_agent', 'timezone', 'screen']);

  const W = {
    pending: [], // {convId, id?, name, size, content_type, state: 'uploading'|'ready'|'failed', error}
    blobs: new Map(), // attachment id -> Promise<blob: URL>
    canned: [], // visible canned responses
    labels: [], // every label
    label: null, // inbox filter: label id
    suggest: { open: false, items: [], index: 0, start: 0, end: 0 },
  };

  function fmtSize(n) {
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return (n / 1024).toFixed(n < 10240 ? 1 : 0) + ' KB';
    return (n / 1024 / 1024).toFixed(1) + ' MB';
  }

  function hint(text) {
    $('reply-hint').textContent = text || '';
  }

  // -------------------------------------------------------------------------------------
  // Attachments
  // -------------------------------------------------------------------------------------
  /** The file's bytes as a blob: URL, fetched once with the bearer token. */
  function blobUrl(a) {
    if (!W.blobs.has(a.id)) {
      const p = fetch(a.url, { headers: { authorization: 'Bearer ' + S.token } }).then((res) => {
        if (!res.ok) throw new Error('download failed (' + res.status + ')');
        return res.blob();
      }).then((b) => URL.createObjectURL(b));
      p.catch(() => W.blobs.delete(a.id));
      W.blobs.set(a.id, p);
    }
    return W.blobs.get(a.id);
  }

  function attachmentNode(a) {
    if (IMAGE_TYPES.includes(a.content_type)) {
      const img = el('img', { class: 'att-image', alt: a.name, title: a.name + ' · ' + fmtSize(a.size), 'data-attachment': a.id });
      blobUrl(a).then((u) => { img.src = u; }).catch(() => { img.alt = a.name + ' (unavailable)'; });
      const open = () => blobUrl(a).then((u) => window.open(u, '_blank', 'noopener')).catch(K.showError);
      return el('button', { type: 'button', class: 'att att-img', onclick: open, 'aria-label': 'Open image ' + a.name }, [img]);
    }
    const download = () => blobUrl(a).then((u) => {
      const link = el('a', { href: u, download: a.name });
      document.body.append(link);
      link.click();
      link.remove();
    }).catch(K.showError);
    return el('button', { type: 'button', class: 'att att-file', onclick: download, 'data-attachment': a.id }, [
      el('span', { class: 'att-icon', text: '📎', 'aria-hidden': 'true' }),
      el('span', { class: 'att-name', text: a.name }),
      el('span', { class: 'att-size', text: fmtSize(a.size) }),
    ]);
  }

  hooks.messageExtras.push((m) => {
    if (!m.attachments || !m.attachments.length) return null;
    return el('div', { class: 'attachments' }, m.attachments.map(attachmentNode));
  });

  function renderPending() {
    const box = $('reply-attachments');
    const cur = S.current;
    const mine = W.pending.filter((p) => cur && p.convId === cur.id);
    box.hidden = mine.length === 0;
    box.replaceChildren(...mine.map((p) => el('span', { class: 'pending-att ' + p.state }, [
      el('span', { text: '📎 ' + p.name }),
      el('span', { class: 'att-size', text: p.state === 'uploading' ? 'uploading…' : p.state === 'failed' ? p.error : fmtSize(p.size) }),
      el('button', {
        type: 'button', class: 'link', text: '×', 'aria-label': 'Remove ' + p.name,
        onclick: () => { W.pending = W.pending.filter((x) => x !== p); renderPending(); },
      }),
    ])));
  }

  async function upload(file) {
    const cur = S.current;
    if (!cur) return;
    const p = { convId: cur.id, name: file.name, size: file.size, state: 'uploading' };
    W.pending.push(p);
    renderPending();
    try {
      const res = await fetch('/api/conversations/' + cur.id + '/attachments?name=' + encodeURIComponent(file.name), {
        method: 'POST',
        headers: { authorization: 'Bearer ' + S.token, 'content-type': file.type || 'application/octet-stream' },
        body: file,
      });
      const data = await res.json().catch(() => null);
      if (!res.ok) throw new Error((data && data.error && data.error.message) || 'upload failed');
      Object.assign(p, data, { state: 'ready' });
    } catch (e) {
      p.state = 'failed';
      p.error = res413(e.message);
    }
    renderPending();
  }
  function res413(message) {
    return /larger than/.test(message) ? 'too large' : message;
  }

  hooks.beforeSend.push((entry) => {
    const mine = W.pending.filter((p) => p.convId === entry.convId);
    if (mine.some((p) => p.state === 'uploading')) { hint('Wait for the upload to finish.'); return false; }
    entry.attachments = mine.filter((p) => p.state === 'ready').map((p) => ({ id: p.id, name: p.name }));
    return true;
  });
  hooks.afterSend.push((entry) => {
    W.pending = W.pending.filter((p) => p.convId !== entry.convId);
    renderPending();
  });
  hooks.threadOpened.push(() => { renderPending(); renderThreadLabels(); });

  // -------------------------------------------------------------------------------------
  // Canned responses: /shortcut suggestions
  // -------------------------------------------------------------------------------------
  async function loadCanned() {
    try {
      const r = await api('GET', '/api/canned_responses');
      W.canned = r.items;
    } catch (_) { /* keep the old list */ }
  }

  function cannedFor(prefix) {
    const site = S.current && S.current.conv && S.current.conv.site_id;
    const p = prefix.toLowerCase();
    return W.canned
      .filter((c) => (!c.site_id || c.site_id === site) && c.shortcut.toLowerCase().startsWith(p))
      .slice(0, 8);
  }

  function closeSuggest() {
    W.suggest.open = false;
    $('canned-suggest').hidden = true;
    $('reply-text').removeAttribute('aria-activedescendant');
  }

  function renderSuggest() {
    const box = $('canned-suggest');
    const s = W.suggest;
    box.replaceChildren(...s.items.map((c, i) => el('li', {
      id: 'canned-opt-' + i,
      role: 'option',
      class: 'canned-opt' + (i === s.index ? ' active' : ''),
      'aria-selected': String(i === s.index),
      onmousedown: (e) => { e.preventDefault(); s.index = i; insertCanned(); },
    }, [
      el('span', { class: 'canned-key', text: '/' + c.shortcut }),
      el('span', { class: 'canned-title', text: c.title || '' }),
      el('span', { class: 'canned-body', text: c.body }),
      c.shared ? el('span', { class: 'canned-shared', text: 'shared' }) : null,
    ])));
    box.hidden = false;
    $('reply-text').setAttribute('aria-activedescendant', 'canned-opt-' + s.index);
  }

  function updateSuggest() {
    const ta = $('reply-text');
    const upto = ta.value.slice(0, ta.selectionStart);
    const m = /(^|\s)\/([\p{L}\p{N}_-]*)$/u.exec(upto);
    if (!m) { closeSuggest(); return; }
    const items = cannedFor(m[2]);
    if (!items.length) { closeSuggest(); return; }
    W.suggest = { open: true, items, index: 0, start: upto.length - m[2].length - 1, end: ta.selectionStart };
    renderSuggest();
  }

  function insertCanned() {
    const s = W.suggest;
    const c = s.items[s.index];
    if (!c) return;
    const ta = $('reply-text');
    const before = ta.value.slice(0, s.start);
    const after = ta.value.slice(s.end);
    ta.value = before + c.body + after;
    const caret = before.length + c.body.length;
    ta.setSelectionRange(caret, caret);
    closeSuggest();
    ta.focus();
    ta.dispatchEvent(new Event('input'));
  }

  $('reply-text').addEventListener('input', updateSuggest);
  $('reply-text').addEventListener('blur', () => setTimeout(closeSuggest, 150));
  // Capture on the form: runs before console.js's Enter-sends handler on the textarea.
  $('reply').addEventListener('keydown', (e) => {
    if (e.target !== $('reply-text') || !W.suggest.open) return;
    const s = W.suggest;
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      s.index = (s.index + (e.key === 'ArrowDown' ? 1 : s.items.length - 1)) % s.items.length;
      renderSuggest();
    } else if ((e.key === 'Enter' && !e.shiftKey && !e.isComposing) || e.key === 'Tab') {
      insertCanned();
    } else if (e.key === 'Escape') {
      closeSuggest();
    } else {
      return;
    }
    e.preventDefault();
    e.stopPropagation();
  }, true);

  // -------------------------------------------------------------------------------------
  // Canned responses: management dialog
  // -------------------------------------------------------------------------------------
  function renderCannedDialog() {
    const list = $('canned-list');
    const admin = S.me && S.me.role === 'admin';
    list.replaceChildren(...W.canned.map((c) => el('li', { class: 'canned-row' }, [
      el('span', { class: 'canned-key', text: '/' + c.shortcut }),
      el('span', { class: 'canned-body', text: c.body }),
      el('span', { class: 'canned-shared', text: c.shared ? 'shared' : 'mine' }),
      (!c.shared || admin) ? el('button', {
        type: 'button', class: 'link', text: 'Delete',
        onclick: async () => {
          try { await api('DELETE', '/api/canned_responses/' + c.id); await loadCanned(); renderCannedDialog(); } catch (e) { K.showError(e); }
        },
      }) : null,
    ])));
    $('canned-shared-wrap').hidden = !admin;
  }

  $('canned-open').addEventListener('click', async () => {
    await loadCanned();
    renderCannedDialog();
    $('canned-dialog').showModal();
  });
  $('canned-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    if (e.submitter && e.submitter.value === 'close') { $('canned-dialog').close(); return; }
    $('canned-error').textContent = '';
    try {
      await api('POST', '/api/canned_responses', {
        shortcut: $('canned-shortcut').value,
        body: $('canned-body').value,
        shared: $('canned-shared').checked,
      });
      $('canned-shortcut').value = '';
      $('canned-body').value = '';
      await loadCanned();
      renderCannedDialog();
    } catch (err) {
      $('canned-error').textContent = err.message;
    }
  });

  // -------------------------------------------------------------------------------------
  // Labels
  // -------------------------------------------------------------------------------------
  async function loadLabels() {
    try {
      const r = await api('GET', '/api/labels');
      W.labels = r.items;
    } catch (_) { /* keep */ }
    renderLabelNav();
    renderThreadLabels();
  }

  function chip(l, extra) {
    const node = el('span', { class: 'label-chip', title: l.name }, [
      el('span', { class: 'label-dot', 'aria-hidden': 'true' }),
      el('span', { text: l.name }),
      extra || null,
    ]);
    node.style.setProperty('--label', /^#[0-9a-f]{6}$/i.test(l.color) ? l.color : '#64748b');
    return node;
  }

  function renderLabelNav() {
    const ul = $('label-filters');
    const admin = S.me && S.me.role === 'admin';
    ul.replaceChildren(...W.labels.map((l) => el('li', { class: 'label-row' }, [
      el('button', {
        type: 'button', 'data-label': l.id, 'aria-current': String(W.label === l.id),
        onclick: () => { W.label = W.label === l.id ? null : l.id; renderLabelNav(); K.loadList().catch(K.showError); },
      }, [chip(l)]),
      admin ? el('button', {
        type: 'button', class: 'label-delete', text: '×', 'aria-label': 'Delete label ' + l.name,
        onclick: async () => {
          if (!window.confirm('Delete the label “' + l.name + '” from every conversation?')) return;
          try {
            await api('DELETE', '/api/labels/' + l.id);
            if (W.label === l.id) { W.label = null; K.loadList().catch(K.showError); }
            await loadLabels();
          } catch (e) { K.showError(e); }
        },
      }) : null,
    ])));
    $('label-new').hidden = !admin;
  }

  hooks.listQuery.push((q) => { if (W.label) q.set('label', W.label); });
  hooks.listFilter.push((c) => !W.label || (c.labels || []).some((l) => l.id === W.label));
  hooks.listItemExtras.push((c) => (c.labels && c.labels.length
    ? el('span', { class: 'row-labels' }, c.labels.map((l) => chip(l)))
    : null));

  function renderThreadLabels() {
    const box = $('thread-labels');
    const cur = S.current;
    if (!box) return;
    if (!cur || !cur.conv) { box.replaceChildren(); return; }
    const have = cur.conv.labels || [];
    const chips = have.map((l) => chip(l, el('button', {
      type: 'button', class: 'link', text: '×', 'aria-label': 'Remove label ' + l.name,
      onclick: () => changeLabel('DELETE', '/labels/' + l.id),
    })));
    const options = W.labels.filter((l) => !have.some((h) => h.id === l.id));
    const select = options.length ? el('select', {
      id: 'label-add', 'aria-label': 'Add a label',
      onchange: (e) => { if (e.target.value) changeLabel('POST', '/labels', { label_id: e.target.value }); },
    }, [el('option', { value: '', text: '+ Label' }), ...options.map((l) => el('option', { value: l.id, text: l.name }))]) : null;
    box.replaceChildren(...chips, ...(select ? [select] : []));
  }

  async function changeLabel(method, path, body) {
    const cur = S.current;
    if (!cur) return;
    try {
      const conv = await api(method, '/api/conversations/' + cur.id + path, body);
      K.upsertConversation(conv);
      renderThreadLabels();
    } catch (e) {
      K.showError(e);
    }
  }

  $('label-new').addEventListener('submit', async (e) => {
    e.preventDefault();
    const name = $('label-new-name').value.trim();
    if (!name) return;
    try {
      await api('POST', '/api/labels', { name, color: $('label-new-color').value });
      $('label-new-name').value = '';
      await loadLabels();
    } catch (err) {
      K.showError(err);
    }
  });

  // -------------------------------------------------------------------------------------
  // Custom attributes (visitor panel)
  // -------------------------------------------------------------------------------------
  async function patchAttributes(patch) {
    const cur = S.current;
    if (!cur || !cur.visitor) return;
    try {
      const v = await api('PATCH', '/api/visitors/' + cur.visitor.id + '/attributes', patch);
      if (S.current === cur) { cur.visitor = v; K.renderProfile(); }
    } catch (e) {
      K.showError(e);
    }
  }

  hooks.profileExtras.push((cur) => {
    renderThreadLabels();
    const v = cur.visitor;
    if (!v) return [];
    const attrs = Object.entries(v.attributes || {}).filter(([k]) => !PAGE_KEYS.has(k));
    const list = el('ul', { class: 'attr-list', id: 'attr-list' }, attrs.map(([k, val]) => el('li', { 'data-key': k }, [
      el('span', { class: 'attr-key', text: k }),
      el('span', { class: 'attr-val', text: String(val) }),
      el('button', { type: 'button', class: 'link', text: '×', 'aria-label': 'Remove ' + k, onclick: () => patchAttributes({ [k]: null }) }),
    ])));
    const key = el('input', { id: 'attr-key', 'aria-label': 'Attribute name', placeholder: 'name', maxlength: '64' });
    const value = el('input', { id: 'attr-value', 'aria-label': 'Attribute value', placeholder: 'value', maxlength: '1000' });
    const form = el('form', {
      class: 'attr-form',
      onsubmit: (e) => {
        e.preventDefault();
        const k = key.value.trim();
        if (!k) return;
        patchAttributes({ [k]: value.value });
      },
    }, [key, value, el('button', { type: 'submit', text: 'Set' })]);
    return [el('dt', { text: 'Attributes' }), el('dd', {}, [list, form])];
  });

  // -------------------------------------------------------------------------------------
  // Search
  // -------------------------------------------------------------------------------------
  function highlight(text, q) {
    const node = el('span', { class: 'hit-text' });
    const terms = q.split(/\s+/).filter(Boolean).map((t) => t.toLowerCase());
    const lower = text.toLowerCase();
    let at = -1;
    let len = 0;
    for (const t of terms) {
      const i = lower.indexOf(t);
      if (i >= 0 && (at < 0 || i < at)) { at = i; len = t.length; }
    }
    const start = Math.max(0, at - 40);
    const snippet = (start > 0 ? '…' : '') + text.slice(start, start + 160) + (start + 160 < text.length ? '…' : '');
    if (at < 0) { node.textContent = snippet; return node; }
    const off = at - start + (start > 0 ? 1 : 0);
    node.append(snippet.slice(0, off), el('mark', { text: snippet.slice(off, off + len) }), snippet.slice(off + len));
    return node;
  }

  async function runSearch(q) {
    const box = $('search-results');
    box.hidden = false;
    $('search-status').textContent = 'Searching…';
    $('search-messages').replaceChildren();
    $('search-visitors').replaceChildren();
    try {
      const r = await api('GET', '/api/search?' + new URLSearchParams({ q, limit: '30' }));
      $('search-status').textContent = r.messages.length || r.visitors.length
        ? plural(r.messages.length, 'message') + ', ' + plural(r.visitors.length, 'visitor')
        : 'Nothing found for “' + q + '”.';
      $('search-messages').replaceChildren(...r.messages.map((h) => el('li', { class: 'hit' }, [
        el('button', { type: 'button', onclick: () => openHit(h.conversation.id) }, [
          el('span', { class: 'row1' }, [
            el('span', { class: 'cname', text: h.visitor.name || h.visitor.email || 'Visitor ' + h.visitor.id.slice(0, 6) }),
            el('span', { class: 'ctime', text: K.fmtTime(h.message.created_at) }),
          ]),
          el('span', { class: 'row2' }, [
            h.message.private ? el('span', { class: 'chip note', text: 'note' }) : null,
            highlight(h.message.body, q),
          ]),
        ]),
      ])));
      $('search-visitors').replaceChildren(...r.visitors.map((v) => el('li', { class: 'hit' }, [
        el('button', { type: 'button', disabled: !v.conversation_id, onclick: () => openHit(v.conversation_id) }, [
          el('span', { class: 'cname', text: v.name || '—' }),
          el('span', { class: 'hit-text', text: v.email || '' }),
        ]),
      ])));
      $('search-visitors-title').hidden = r.visitors.length === 0;
    } catch (e) {
      $('search-status').textContent = e.message;
    }
  }

  function plural(n, word) {
    return n + ' ' + word + (n === 1 ? '' : 's');
  }

  function openHit(id) {
    if (id) K.openConversation(id);
  }

  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const q = $('search-q').value.trim();
    if (q) runSearch(q);
  });
  $('search-q').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') { $('search-q').value = ''; $('search-results').hidden = true; }
  });
  $('search-close').addEventListener('click', () => { $('search-q').value = ''; $('search-results').hidden = true; });

  // -------------------------------------------------------------------------------------
  // Attach button and start-up
  // -------------------------------------------------------------------------------------
  $('attach').addEventListener('click', () => $('attach-input').click());
  $('attach-input').addEventListener('change', (e) => {
    for (const f of e.target.files) upload(f);
    e.target.value = '';
  });
  $('reply-text').addEventListener('paste', (e) => {
    const files = [...(e.clipboardData && e.clipboardData.files) || []];
    if (files.length) { e.preventDefault(); files.forEach(upload); }
  });

  // Once signed in (the app shows), load what the features need.
  const started = new MutationObserver(() => {
    if (!$('app').hidden && S.token) { loadCanned(); loadLabels(); }
  });
  started.observe($('app'), { attributes: true, attributeFilter: ['hidden'] });
  if (!$('app').hidden && S.token) { loadCanned(); loadLabels(); }
})();
