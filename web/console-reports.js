/*
 * kefu agent console: the Reports page (GET /api/reports). Conversations per day as an SVG
 * bar chart, first response and resolution times (median, p90), CSAT, per agent and per
 * site. Self-contained: adds its own button to the sidebar and its own panel; no library,
 * no CDN. Everything from the server is put on screen with textContent.
 */
(function () {
  'use strict';

  const TOKEN_KEY = 'kefu.console.token'; // the console's own session token
  const SVG = 'http://www.w3.org/2000/svg';

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  /** 40 → "40s", 84 → "1m 24s", 5400 → "1h 30m"; null → "—". */
  function duration(s) {
    if (s === null || s === undefined) return '—';
    s = Math.round(s);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
  }

  function csat(avg) {
    return avg === null || avg === undefined ? '—' : avg.toFixed(2);
  }

  function day(d) {
    return d.toISOString().slice(0, 10);
  }

  async function get(path) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    const r = await fetch(path, { headers: { authorization: 'Bearer ' + token } });
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new Error((data && data.error && data.error.message) || 'HTTP ' + r.status);
    return data;
  }

  function build() {
    const sidebar = document.querySelector('nav.sidebar');
    if (!sidebar || document.getElementById('open-reports')) return;
    const title = el('h2', { class: 'nav-title' }, 'Insights');
    const list = el('ul', { class: 'nav-list' });
    const li = el('li');
    const button = el('button', { type: 'button', id: 'open-reports' }, 'Reports');
    li.appendChild(button);
    list.appendChild(li);
    sidebar.appendChild(title);
    sidebar.appendChild(list);

    const panel = el('section', { id: 'reports', class: 'reports-panel', 'aria-label': 'Reports', hidden: '' });
    const head = el('div', { class: 'reports-head' });
    head.appendChild(el('h2', { class: 'pane-title' }, 'Reports'));
    const form = el('form', { id: 'rep-form', class: 'reports-form' });
    const to = new Date();
    const from = new Date(to.getTime() - 29 * 86400000);
    form.append(
      el('label', { for: 'rep-from' }, 'From'),
      el('input', { id: 'rep-from', type: 'date', value: day(from), required: '' }),
      el('label', { for: 'rep-to' }, 'To'),
      el('input', { id: 'rep-to', type: 'date', value: day(to), required: '' }),
      el('label', { for: 'rep-site' }, 'Site'),
    );
    const site = el('select', { id: 'rep-site' });
    site.appendChild(el('option', { value: '' }, 'All sites'));
    form.appendChild(site);
    form.appendChild(el('button', { type: 'submit', class: 'primary', id: 'rep-run' }, 'Show'));
    head.appendChild(form);
    head.appendChild(el('button', { type: 'button', class: 'ghost', id: 'rep-close' }, 'Back to inbox'));
    panel.appendChild(head);
    // Export (admins): the same dates and site, a status and a format; the file is streamed
    // by the server and saved by the browser.
    const exp = el('form', { id: 'rep-export', class: 'reports-form', 'aria-label': 'Export' });
    exp.appendChild(el('label', { for: 'rep-exp-status' }, 'Export'));
    const status = el('select', { id: 'rep-exp-status' });
    for (const [v, t] of [['', 'Any status'], ['pending', 'Pending'], ['open', 'Open'], ['resolved', 'Resolved']]) status.appendChild(el('option', { value: v }, t));
    const format = el('select', { id: 'rep-exp-format', 'aria-label': 'Format' });
    for (const [v, t] of [['csv', 'CSV'], ['json', 'JSON']]) format.appendChild(el('option', { value: v }, t));
    exp.append(status, format,
      el('button', { type: 'button', class: 'ghost', id: 'rep-export-conversations' }, 'Conversations'),
      el('button', { type: 'button', class: 'ghost', id: 'rep-export-messages' }, 'Messages'));
    panel.appendChild(exp);
    panel.appendChild(el('p', { id: 'rep-error', class: 'form-error', role: 'alert' }));
    panel.appendChild(el('div', { id: 'rep-totals', class: 'rep-cards' }));
    const chartBox = el('figure', { class: 'rep-chart' });
    chartBox.appendChild(el('figcaption', {}, 'Conversations per day'));
    chartBox.appendChild(el('div', { id: 'rep-chart' }));
    panel.appendChild(chartBox);
    panel.appendChild(el('h3', {}, 'Per agent'));
    panel.appendChild(el('table', { id: 'rep-agents', class: 'rep-table' }));
    panel.appendChild(el('h3', {}, 'Per site'));
    panel.appendChild(el('table', { id: 'rep-sites', class: 'rep-table' }));
    document.getElementById('app').appendChild(panel);

    button.addEventListener('click', () => open());
    document.getElementById('rep-close').addEventListener('click', () => { panel.hidden = true; });
    form.addEventListener('submit', (e) => { e.preventDefault(); load(); });
    document.getElementById('rep-export-conversations').addEventListener('click', () => exportFile('conversations'));
    document.getElementById('rep-export-messages').addEventListener('click', () => exportFile('messages'));
  }

  async function exportFile(kind) {
    const err = document.getElementById('rep-error');
    err.textContent = '';
    const format = document.getElementById('rep-exp-format').value;
    const q = new URLSearchParams({
      format,
      from: document.getElementById('rep-from').value,
      to: document.getElementById('rep-to').value,
    });
    const site = document.getElementById('rep-site').value;
    if (site) q.set('site', site);
    const status = document.getElementById('rep-exp-status').value;
    if (status) q.set('status', status);
    try {
      const token = sessionStorage.getItem(TOKEN_KEY);
      const r = await fetch(`/api/export/${kind}?` + q.toString(), { headers: { authorization: 'Bearer ' + token } });
      if (!r.ok) {
        const data = await r.json().catch(() => null);
        throw new Error((data && data.error && data.error.message) || 'HTTP ' + r.status);
      }
      const url = URL.createObjectURL(await r.blob());
      const a = el('a', { href: url, download: `kefu-${kind}.${format}` });
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (e) {
      err.textContent = 'Cannot export: ' + e.message;
    }
  }

  async function open() {
    document.getElementById('reports').hidden = false;
    const select = document.getElementById('rep-site');
    if (select.options.length === 1) {
      // Only admins may list sites; agents report over all of them.
      try {
        const sites = await get('/api/sites');
        for (const s of sites.items) select.appendChild(el('option', { value: s.id }, s.name));
      } catch (_) { select.disabled = true; }
    }
    await load();
  }

  function card(parent, metric, label, value) {
    const c = el('div', { class: 'rep-card', 'data-metric': metric });
    c.appendChild(el('span', { class: 'rep-label' }, label));
    c.appendChild(el('span', { class: 'rep-value' }, value));
    parent.appendChild(c);
  }

  function chart(days) {
    const box = document.getElementById('rep-chart');
    box.textContent = '';
    if (!days.length) { box.appendChild(el('p', { class: 'empty' }, 'No conversations in this range.')); return; }
    const W = 720, H = 220, pad = 28;
    const max = Math.max(...days.map((d) => d.conversations), 1);
    const step = (W - pad * 2) / days.length;
    const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'Conversations per day', class: 'rep-svg' });
    s.appendChild(svg('line', { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: 'rep-axis' }));
    days.forEach((d, i) => {
      const h = ((H - pad * 2) * d.conversations) / max;
      const x = pad + i * step + step * 0.15;
      const w = step * 0.7;
      const bar = svg('rect', { x, y: H - pad - h, width: w, height: h, class: 'rep-bar', 'data-day': d.day, 'data-count': d.conversations });
      bar.appendChild(svg('title', {}, `${d.day}: ${d.conversations} conversations, ${d.resolved} resolved`));
      s.appendChild(bar);
      s.appendChild(svg('text', { x: x + w / 2, y: H - pad - h - 4, class: 'rep-bar-value', 'text-anchor': 'middle' }, d.conversations));
      if (days.length <= 16 || i % Math.ceil(days.length / 16) === 0) {
        s.appendChild(svg('text', { x: x + w / 2, y: H - 8, class: 'rep-bar-label', 'text-anchor': 'middle' }, d.day.slice(5)));
      }
    });
    box.appendChild(s);
  }

  function table(id, rows, firstColumn) {
    const t = document.getElementById(id);
    t.textContent = '';
    const head = el('tr');
    for (const h of [firstColumn, 'Conversations', 'Resolved', 'First response (median)', 'First response (p90)', 'Resolution (median)', 'Resolution (p90)', 'CSAT']) {
      head.appendChild(el('th', { scope: 'col' }, h));
    }
    const thead = el('thead');
    thead.appendChild(head);
    t.appendChild(thead);
    const body = el('tbody');
    for (const r of rows) {
      const tr = el('tr', { 'data-name': r.name || '' });
      tr.appendChild(el('th', { scope: 'row' }, r.name || '—'));
      for (const v of [String(r.conversations), String(r.resolved), duration(r.first_response_median_seconds), duration(r.first_response_p90_seconds), duration(r.resolution_median_seconds), duration(r.resolution_p90_seconds), csat(r.csat_average)]) {
        tr.appendChild(el('td', {}, v));
      }
      body.appendChild(tr);
    }
    t.appendChild(body);
  }

  async function load() {
    const err = document.getElementById('rep-error');
    err.textContent = '';
    const q = new URLSearchParams({
      from: document.getElementById('rep-from').value,
      to: document.getElementById('rep-to').value,
    });
    const site = document.getElementById('rep-site').value;
    if (site) q.set('site', site);
    let r;
    try {
      r = await get('/api/reports?' + q.toString());
    } catch (e) {
      err.textContent = 'Cannot load the report: ' + e.message;
      return;
    }
    const totals = document.getElementById('rep-totals');
    totals.textContent = '';
    const t = r.totals || { conversations: 0, resolved: 0, csat_count: 0 };
    card(totals, 'conversations', 'Conversations', String(t.conversations));
    card(totals, 'resolved', 'Resolved', String(t.resolved));
    card(totals, 'first-response-median', 'First response, median', duration(t.first_response_median_seconds));
    card(totals, 'first-response-p90', 'First response, p90', duration(t.first_response_p90_seconds));
    card(totals, 'resolution-median', 'Resolution, median', duration(t.resolution_median_seconds));
    card(totals, 'resolution-p90', 'Resolution, p90', duration(t.resolution_p90_seconds));
    card(totals, 'csat', `CSAT (${t.csat_count} ratings)`, csat(t.csat_average));
    chart(r.conversations_per_day);
    table('rep-agents', r.per_agent, 'Agent');
    table('rep-sites', r.per_site, 'Site');
    document.getElementById('reports').setAttribute('data-loaded', q.toString() + '&site=' + site);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', build);
  else build();
})();
