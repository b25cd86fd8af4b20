/*
 * kefu agent console: the Webhooks page (admins). Lists a site's webhooks, adds and
 * removes them, turns them on and off, and shows each one's delivery log (status,
 * attempts, the receiver's last answer). API: /api/sites/{id}/webhooks. Self-contained:
 * adds its own sidebar button and panel. Text from the server goes on screen with
 * textContent only.
 */
(function () {
  'use strict';

  const TOKEN_KEY = 'kefu.console.token';
  const EVENTS = ['conversation.created', 'conversation.updated', 'conversation.resolved', 'message.created'];

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  async function call(method, path, body) {
    const r = await fetch(path, {
      method,
      headers: { authorization: 'Bearer ' + sessionStorage.getItem(TOKEN_KEY), 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) throw new Error((data && data.error && data.error.message) || 'HTTP ' + r.status);
    return data;
  }

  const P = { site: null, open: null };

  async function build() {
    const sidebar = document.querySelector('nav.sidebar');
    if (!sidebar || document.getElementById('open-webhooks')) return;
    if (!sessionStorage.getItem(TOKEN_KEY)) return;
    let me;
    try { me = await call('GET', '/api/me'); } catch (_) { return; }
    if (me.role !== 'admin') return;
    const list = el('ul', { class: 'nav-list' });
    const li = el('li');
    const button = el('button', { type: 'button', id: 'open-webhooks' }, 'Webhooks');
    li.appendChild(button);
    list.appendChild(li);
    sidebar.appendChild(list);

    const panel = el('section', { id: 'webhooks', class: 'reports-panel', 'aria-label': 'Webhooks', hidden: '' });
    const head = el('div', { class: 'reports-head' });
    head.appendChild(el('h2', { class: 'pane-title' }, 'Webhooks'));
    head.appendChild(el('label', { for: 'wh-site' }, 'Site'));
    head.appendChild(el('select', { id: 'wh-site' }));
    head.appendChild(el('button', { type: 'button', class: 'ghost', id: 'wh-close' }, 'Back to inbox'));
    panel.appendChild(head);
    panel.appendChild(el('p', { id: 'wh-error', class: 'form-error', role: 'alert' }));

    const form = el('form', { id: 'wh-form', class: 'reports-form wh-form' });
    form.appendChild(el('label', { for: 'wh-url' }, 'Receiver URL'));
    form.appendChild(el('input', { id: 'wh-url', type: 'url', required: '', placeholder: 'https://example.com/kefu-hook', size: '40' }));
    for (const e of EVENTS) {
      const lab = el('label', { class: 'wh-event' });
      const box = el('input', { type: 'checkbox', value: e, checked: '' });
      lab.append(box, document.createTextNode(' ' + e));
      form.appendChild(lab);
    }
    const priv = el('label', { class: 'wh-event' });
    priv.append(el('input', { type: 'checkbox', id: 'wh-private' }), document.createTextNode(' include private notes'));
    form.appendChild(priv);
    form.appendChild(el('button', { type: 'submit', class: 'primary', id: 'wh-add' }, 'Add webhook'));
    panel.appendChild(form);
    panel.appendChild(el('table', { id: 'wh-list', class: 'rep-table' }));
    panel.appendChild(el('h3', { id: 'wh-log-title' }));
    panel.appendChild(el('table', { id: 'wh-log', class: 'rep-table' }));
    document.getElementById('app').appendChild(panel);

    button.addEventListener('click', open);
    document.getElementById('wh-close').addEventListener('click', () => { panel.hidden = true; });
    document.getElementById('wh-site').addEventListener('change', (e) => { P.site = e.target.value; P.open = null; refresh(); });
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const events = [...form.querySelectorAll('.wh-event input[value]')].filter((b) => b.checked).map((b) => b.value);
      try {
        await call('POST', `/api/sites/${P.site}/webhooks`, {
          url: document.getElementById('wh-url').value,
          events,
          include_private: document.getElementById('wh-private').checked,
        });
        document.getElementById('wh-url').value = '';
        await refresh();
      } catch (err) { showError(err); }
    });
  }

  function showError(err) {
    document.getElementById('wh-error').textContent = err ? String(err.message || err) : '';
  }

  async function open() {
    document.getElementById('webhooks').hidden = false;
    const select = document.getElementById('wh-site');
    try {
      const sites = await call('GET', '/api/sites');
      select.textContent = '';
      for (const s of sites.items) select.appendChild(el('option', { value: s.id }, s.name));
      P.site = P.site || (sites.items[0] && sites.items[0].id);
      if (P.site) select.value = P.site;
      await refresh();
    } catch (err) { showError(err); }
  }

  async function refresh() {
    showError(null);
    if (!P.site) return;
    const t = document.getElementById('wh-list');
    t.textContent = '';
    let hooks;
    try { hooks = (await call('GET', `/api/sites/${P.site}/webhooks`)).items; } catch (err) { showError(err); return; }
    const head = el('tr');
    for (const h of ['URL', 'Events', 'Private notes', 'Secret', 'Active', '']) head.appendChild(el('th', { scope: 'col' }, h));
    const thead = el('thead');
    thead.appendChild(head);
    t.appendChild(thead);
    const body = el('tbody');
    for (const h of hooks) {
      const tr = el('tr', { 'data-webhook': h.id });
      tr.appendChild(el('th', { scope: 'row' }, h.url));
      tr.appendChild(el('td', {}, h.events.join(', ')));
      tr.appendChild(el('td', {}, h.include_private ? 'yes' : 'no'));
      tr.appendChild(el('td', { class: 'wh-secret' }, h.secret));
      const active = el('input', { type: 'checkbox', 'aria-label': 'Active' });
      active.checked = h.active;
      active.addEventListener('change', async () => {
        try { await call('PATCH', `/api/sites/${P.site}/webhooks/${h.id}`, { active: active.checked }); } catch (err) { showError(err); }
      });
      const tdActive = el('td');
      tdActive.appendChild(active);
      tr.appendChild(tdActive);
      const actions = el('td');
      const log = el('button', { type: 'button', class: 'ghost wh-show-log' }, 'Deliveries');
      log.addEventListener('click', () => { P.open = h; showLog(); });
      const del = el('button', { type: 'button', class: 'ghost wh-delete' }, 'Delete');
      del.addEventListener('click', async () => {
        if (!window.confirm('Delete the webhook to ' + h.url + '?')) return;
        try { await call('DELETE', `/api/sites/${P.site}/webhooks/${h.id}`); P.open = null; await refresh(); } catch (err) { showError(err); }
      });
      actions.append(log, del);
      tr.appendChild(actions);
      body.appendChild(tr);
    }
    t.appendChild(body);
    await showLog();
  }

  async function showLog() {
    const t = document.getElementById('wh-log');
    const title = document.getElementById('wh-log-title');
    t.textContent = '';
    title.textContent = '';
    if (!P.open) return;
    title.textContent = 'Deliveries to ' + P.open.url;
    let items;
    try { items = (await call('GET', `/api/sites/${P.site}/webhooks/${P.open.id}/deliveries`)).items; } catch (err) { showError(err); return; }
    const head = el('tr');
    for (const h of ['Event', 'Type', 'Status', 'Attempts', 'Last answer', 'Error', 'Last attempt', 'Next attempt']) head.appendChild(el('th', { scope: 'col' }, h));
    const thead = el('thead');
    thead.appendChild(head);
    t.appendChild(thead);
    const body = el('tbody');
    for (const d of items) {
      const tr = el('tr', { 'data-status': d.status });
      tr.appendChild(el('th', { scope: 'row' }, String(d.event_id)));
      for (const v of [d.event_type, d.status, String(d.attempts), d.last_status === null ? '—' : String(d.last_status), d.last_error || '', d.last_attempt_at ? new Date(d.last_attempt_at).toLocaleString() : '—', d.status === 'pending' ? new Date(d.next_attempt_at).toLocaleString() : '—']) {
        tr.appendChild(el('td', {}, v));
      }
      body.appendChild(tr);
    }
    t.appendChild(body);
    if (!items.length) title.textContent += ' — none yet';
  }

  // The console signs in after load: look again whenever the app shows.
  function start() {
    build();
    const app = document.getElementById('app');
    if (app) new MutationObserver(() => { if (!app.hidden) build(); }).observe(app, { attributes: true, attributeFilter: ['hidden'] });
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
