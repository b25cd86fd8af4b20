/*
 * kefu agent console: site settings for admins — business hours (weekly schedule in the
 * site's time zone, closed dates, the offline message the widget shows outside them) and
 * identity verification (generate, rotate or turn off the identity secret; the secret is
 * shown once, right after it is generated).
 *
 * Hooks into console.js through the `kefu:signed-in` event (agent, api, el). Everything a
 * user typed is shown with textContent / value.
 */
(function () {
  'use strict';

  const DAYS = [['mon', 'Monday'], ['tue', 'Tuesday'], ['wed', 'Wednesday'], ['thu', 'Thursday'], ['fri', 'Friday'], ['sat', 'Saturday'], ['sun', 'Sunday']];

  let ctx = null; // {agent, api, el}
  let dialog = null;

  window.addEventListener('kefu:signed-in', (e) => {
    ctx = e.detail;
    const existing = document.getElementById('open-sites');
    if (ctx.agent.role !== 'admin') { if (existing) existing.remove(); return; }
    if (existing) return;
    const button = ctx.el('button', { id: 'open-sites', type: 'button', class: 'ghost', text: 'Sites', onclick: openDialog });
    const logout = document.getElementById('logout');
    logout.parentNode.insertBefore(button, document.getElementById('me-name'));
  });

  function timeZones() {
    try {
      if (Intl.supportedValuesOf) return Intl.supportedValuesOf('timeZone');
    } catch (_) { /* older browser */ }
    return ['UTC'];
  }

  async function openDialog() {
    const el = ctx.el;
    if (!dialog) {
      dialog = el('dialog', { id: 'sites-dialog', class: 'sites-dialog', 'aria-labelledby': 'sites-title' });
      document.body.append(dialog);
      const zones = el('datalist', { id: 'tz-list' }, timeZones().map((z) => el('option', { value: z })));
      document.body.append(zones);
    }
    dialog.replaceChildren(
      el('header', { class: 'sites-head' }, [
        el('h2', { id: 'sites-title', text: 'Sites' }),
        el('button', { type: 'button', class: 'ghost', text: 'Close', onclick: () => dialog.close() }),
      ]),
      el('p', { class: 'hint', text: 'Loading…' }),
    );
    if (!dialog.open) dialog.showModal();
    try {
      const r = await ctx.api('GET', '/api/sites');
      const list = r.items.map(siteSection);
      dialog.replaceChildren(dialog.firstChild, ...(list.length ? list : [el('p', { class: 'hint', text: 'No sites yet.' })]));
    } catch (e) {
      dialog.replaceChildren(dialog.firstChild, el('p', { class: 'form-error', text: e.message }));
    }
  }

  function siteSection(site) {
    const el = ctx.el;
    const section = el('section', { class: 'site-settings', 'data-site-id': site.id });
    section.append(
      el('h3', { text: site.name }),
      el('p', { class: 'hint' }, [document.createTextNode('Widget key: '), el('code', { text: site.widget_key })]),
      hoursForm(site),
      identityBlock(site),
    );
    return section;
  }

  // ---- business hours -------------------------------------------------------------------

  function hoursForm(site) {
    const el = ctx.el;
    const h = site.business_hours;
    const enabled = el('input', { type: 'checkbox', class: 'bh-enabled', checked: !!h });
    const tz = el('input', { type: 'text', class: 'bh-tz', list: 'tz-list', value: (h && h.time_zone) || guessZone(), 'aria-label': 'Time zone', spellcheck: 'false' });
    const rows = DAYS.map(([key, label]) => {
      const first = (h && h.weekly && h.weekly[key] && h.weekly[key][0]) || null;
      const weekday = key !== 'sat' && key !== 'sun';
      const on = el('input', { type: 'checkbox', class: 'bh-on', checked: h ? !!first : weekday, 'aria-label': label + ' open' });
      const open = el('input', { type: 'time', class: 'bh-open', value: first ? first.open : '09:00', 'aria-label': label + ' opens' });
      const close = el('input', { type: 'time', class: 'bh-close', value: first ? (first.close === '24:00' ? '23:59' : first.close) : '18:00', 'aria-label': label + ' closes' });
      const row = el('tr', { 'data-day': key }, [el('th', { scope: 'row', text: label }), el('td', {}, [on]), el('td', {}, [open]), el('td', {}, [close])]);
      // Further intervals of the day (set through the API) are kept as they are.
      row.extra = h && h.weekly && h.weekly[key] ? h.weekly[key].slice(1) : [];
      if (row.extra.length) row.append(el('td', { class: 'hint', text: '+' + row.extra.length + ' more' }));
      return row;
    });
    const closed = el('input', { type: 'text', class: 'bh-closed', value: ((h && h.closed_dates) || []).join(', '), placeholder: '2026-12-25, 2027-01-01', 'aria-label': 'Closed dates' });
    const offline = el('textarea', { class: 'bh-offline', rows: '2', maxlength: '2000', 'aria-label': 'Offline message' });
    offline.value = site.offline_message || '';
    const status = el('p', { class: 'bh-status', role: 'status' });
    const now = el('p', { class: 'bh-now hint' });
    const form = el('form', { class: 'bh-form', 'aria-label': 'Business hours of ' + site.name }, [
      el('h4', { text: 'Business hours' }),
      el('label', { class: 'inline' }, [enabled, document.createTextNode(' Only chat live during business hours')]),
      el('label', { text: 'Time zone' }), tz,
      el('table', { class: 'bh-week' }, [
        el('thead', {}, [el('tr', {}, [el('th', { text: 'Day' }), el('th', { text: 'Open' }), el('th', { text: 'From' }), el('th', { text: 'To' })])]),
        el('tbody', {}, rows),
      ]),
      el('label', { text: 'Closed dates (YYYY-MM-DD, comma-separated)' }), closed,
      el('label', { text: 'Offline message (shown outside business hours and when nobody is online)' }), offline,
      el('div', { class: 'bh-bar' }, [el('button', { type: 'submit', class: 'primary', text: 'Save' }), status]),
      now,
    ]);
    const sync = () => form.querySelectorAll('.bh-tz, .bh-week input, .bh-closed').forEach((i) => { i.disabled = !enabled.checked; });
    enabled.addEventListener('change', sync);
    sync();
    showNow(site, now);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      status.className = 'bh-status';
      status.textContent = 'Saving…';
      let business_hours = null;
      if (enabled.checked) {
        const weekly = {};
        for (const row of rows) {
          const key = row.dataset.day;
          const on = row.querySelector('.bh-on').checked;
          const first = { open: row.querySelector('.bh-open').value, close: row.querySelector('.bh-close').value };
          weekly[key] = on ? [first, ...row.extra] : [];
        }
        const dates = closed.value.split(/[\s,]+/).filter(Boolean);
        business_hours = { time_zone: tz.value.trim(), weekly, closed_dates: dates };
      }
      try {
        const saved = await ctx.api('PATCH', '/api/sites/' + site.id, { business_hours, offline_message: offline.value });
        Object.assign(site, saved);
        status.textContent = 'Saved.';
        showNow(site, now);
      } catch (err) {
        status.className = 'bh-status form-error';
        status.textContent = err.message;
      }
    });
    return form;
  }

  function guessZone() {
    try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch (_) { return 'UTC'; }
  }

  /** What the widget sees now: the server decides, from its clock and the schedule. */
  async function showNow(site, node) {
    try {
      const res = await fetch('/api/config?site=' + encodeURIComponent(site.widget_key));
      const c = await res.json();
      if (!site.business_hours) node.textContent = 'No schedule: the widget is always within business hours.';
      else if (c.within_business_hours) node.textContent = 'Open now.';
      else node.textContent = 'Closed now' + (c.next_open_at ? '; opens ' + new Date(c.next_open_at).toLocaleString() : '') + '. New conversations wait in the queue (agents may still claim them).';
      node.dataset.open = String(!!c.within_business_hours);
    } catch (_) {
      node.textContent = '';
    }
  }

  // ---- identity verification ------------------------------------------------------------

  function identityBlock(site) {
    const el = ctx.el;
    const box = el('div', { class: 'identity' });
    function render(secret) {
      const on = site.identity_verification;
      const parts = [
        el('h4', { text: 'Identity verification' }),
        el('p', { class: 'identity-state', text: on ? 'On · secret ' + (site.identity_secret_hint || '') : 'Off: visitors are anonymous unless they tell their name.' }),
      ];
      if (secret) {
        const field = el('input', { type: 'text', class: 'identity-secret', readonly: true, value: secret, 'aria-label': 'Identity secret', spellcheck: 'false' });
        parts.push(
          el('p', { class: 'identity-once', text: 'Copy this secret now: it will not be shown again. Keep it on your server; your page passes user_id and user_hash = HMAC-SHA256(secret, user_id) as hex.' }),
          field,
        );
        setTimeout(() => field.select(), 0);
      }
      const bar = el('div', { class: 'bh-bar' }, [
        el('button', { type: 'button', class: on ? '' : 'primary', text: on ? 'Rotate secret' : 'Generate secret', onclick: generate }),
        on ? el('button', { type: 'button', class: 'ghost', text: 'Turn off', onclick: turnOff }) : null,
      ]);
      parts.push(bar);
      box.replaceChildren(...parts);
    }
    async function generate() {
      if (site.identity_verification && !confirm('Rotate the secret? Pages signing with the old one will be refused.')) return;
      try {
        const r = await ctx.api('POST', '/api/sites/' + site.id + '/identity_secret');
        Object.assign(site, r.site);
        render(r.identity_secret);
      } catch (err) {
        box.append(el('p', { class: 'form-error', text: err.message }));
      }
    }
    async function turnOff() {
      try {
        Object.assign(site, await ctx.api('DELETE', '/api/sites/' + site.id + '/identity_secret'));
        render(null);
      } catch (err) {
        box.append(el('p', { class: 'form-error', text: err.message }));
      }
    }
    render(null);
    return box;
  }
})();
