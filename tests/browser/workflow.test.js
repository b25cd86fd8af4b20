// Issue #9 in the browser: the widget's JavaScript API on a host page of another origin
// (queued calls, open/close, events, setAttributes), identity verification across two
// browser contexts, business hours (offline message, email request) with CSAT after the
// resolve, and the console's Sites settings (business hours, identity secret).
'use strict';

const crypto = require('node:crypto');
const http = require('node:http');
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BASE, env, launch, watchedPage, waitUntil, widget, agentConsole, screenshot, assertNoProblems } = require('./lib/kefu');

let browser;
let admin; // bearer token of the bootstrap admin
// The host pages: a local HTTP server of their own (another origin than kefu's; on
// loopback too, which Chromium's local-network rules require of a page using kefu on
// 127.0.0.1). Each page is registered under a path of its own.
const pages = new Map();
const hostServer = http.createServer((req, res) => {
  const html = pages.get(req.url);
  res.writeHead(html ? 200 : 404, { 'content-type': 'text/html; charset=utf-8' });
  res.end(html || 'not found');
});
let HOST = '';
before(async () => {
  await new Promise((r) => hostServer.listen(0, '127.0.0.1', r));
  HOST = 'http://127.0.0.1:' + hostServer.address().port;
  browser = await launch();
  admin = (await call('POST', '/api/auth/login', { email: env('KEFU_ADMIN_EMAIL'), password: env('KEFU_ADMIN_PASSWORD') })).token;
});
after(async () => { await browser?.close(); hostServer.close(); });

async function call(method, path, body, token) {
  const res = await fetch(BASE() + path, {
    method,
    headers: Object.assign({ 'content-type': 'application/json' }, token ? { authorization: 'Bearer ' + token } : {}),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(data)}`);
  return data;
}

/**
 * A browser context and the URL of a host page embedding the widget of `key` from kefu
 * (another origin), after `head` (the queueing stub and early calls).
 */
async function hostContext(key, head, tagAttributes) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 820 } });
  ctx.url = HOST + '/shop-' + pages.size + '.html';
  pages.set(ctx.url.slice(HOST.length), `<!doctype html><html><head><title>Shop</title><script>
      window.events = [];
      window.kefu = window.kefu || function () { (kefu.q = kefu.q || []).push(arguments); };
      ${head || ''}
    </script></head><body><h1>Shop</h1>
    <script src="${BASE()}/widget.js" data-site="${key}" ${tagAttributes || ''} async></script></body></html>`);
  return ctx;
}

async function newSite(body) {
  return call('POST', '/api/sites', Object.assign({ name: 'Shop ' + Date.now(), offline_message: 'We are closed now. We will reply by email.' }, body), admin);
}

/** The conversation of the newest message with this body, as agents see it. */
async function conversationWith(text) {
  const list = await call('GET', '/api/conversations?assignee=any&limit=50', undefined, admin);
  for (const c of list.items) {
    const msgs = await call('GET', `/api/conversations/${c.id}/messages?after_seq=0&limit=50`, undefined, admin);
    if (msgs.items.some((m) => m.body === text)) return call('GET', '/api/conversations/' + c.id, undefined, admin);
  }
  return null;
}

const EVENTS_HEAD = `
  for (const e of ['ready', 'open', 'close', 'message', 'unread', 'error']) {
    kefu('on', e, (d) => window.events.push({ e, d }));
  }`;
const events = (page, name) => page.evaluate((n) => window.events.filter((x) => x.e === n).map((x) => x.d), name);

test('the widget JS API: queued calls, open/close, events and setAttributes', { timeout: 90000 }, async () => {
  const site = await newSite({});
  const ctx = await hostContext(site.widget_key, EVENTS_HEAD + `
    kefu('setAttributes', { plan: 'pro', seats: 12 });`);
  const page = await watchedPage(ctx);
  await page.goto(ctx.url);
  // Calls queued before the script loaded ran: the listeners hear "ready".
  await waitUntil(async () => (await events(page, 'ready')).length === 1, { what: 'the ready event' });
  assert.equal(typeof (await events(page, 'ready'))[0].visitor_id, 'string');

  await page.evaluate(() => kefu.open());
  await widget.panel(page).waitFor({ state: 'visible' });
  assert.equal((await events(page, 'open')).length, 1);
  await page.evaluate(() => kefu('close'));
  await widget.panel(page).waitFor({ state: 'hidden' });
  assert.equal((await events(page, 'close')).length, 1);
  // The launcher counts as well.
  await widget.open(page);
  assert.equal((await events(page, 'open')).length, 2);

  const text = 'api test ' + Date.now();
  await widget.send(page, text);
  await waitUntil(async () => (await widget.bodies(page)).includes(text), { what: 'the visitor message acknowledged' });
  const conv = await waitUntil(() => conversationWith(text), { what: 'the conversation' });
  // setAttributes (queued before load, over PATCH with a CORS preflight) reached agents.
  assert.equal(conv.visitor.attributes.plan, 'pro');
  assert.equal(conv.visitor.attributes.seats, 12);
  const visitor = await page.evaluate(() => kefu.setAttributes({ seats: 13 }));
  assert.equal(visitor.attributes.seats, 13);
  assert.equal(visitor.attributes.plan, 'pro');
  const bad = await page.evaluate(() => kefu.setAttributes(['no']).then(() => 'resolved', (e) => e.message));
  assert.match(bad, /expects an object/);

  // A reply while the panel is closed: a "message" event and an "unread" count.
  await page.evaluate(() => kefu.close());
  const reply = 'Reply for the API ' + Date.now();
  await call('POST', `/api/conversations/${conv.id}/messages`, { client_msg_id: 'api-' + Date.now(), body: reply }, admin);
  await waitUntil(async () => (await events(page, 'message')).some((m) => m.body === reply), { what: 'the message event' });
  const got = (await events(page, 'message')).find((m) => m.body === reply);
  assert.equal(got.sender_type, 'agent');
  assert.equal(got.conversation_id, conv.id);
  await waitUntil(async () => (await events(page, 'unread')).some((u) => u.count === 1), { what: 'unread 1' });
  await page.evaluate(() => kefu.open());
  await waitUntil(async () => (await events(page, 'unread')).at(-1).count === 0, { what: 'unread back to 0 when opened' });

  // off(): a removed listener hears nothing more.
  await page.evaluate(() => {
    window.closes = 0;
    const fn = () => { window.closes++; };
    kefu.on('close', fn);
    kefu.close();
    kefu.off('close', fn);
    kefu.open();
    kefu.close();
  });
  assert.equal(await page.evaluate(() => window.closes), 1);
  const unknown = await page.evaluate(() => { try { kefu.on('nope', () => {}); return 'accepted'; } catch (e) { return e.message; } });
  assert.match(unknown, /unknown event/);
  assertNoProblems(assert, page);
  await ctx.close();
});

test('setUser: a verified customer has the same conversation in two browsers; a forged hash is refused', { timeout: 120000 }, async () => {
  const site = await newSite({});
  const { identity_secret: secret } = await call('POST', `/api/sites/${site.id}/identity_secret`, {}, admin);
  const userId = 'customer-' + Date.now();
  const hash = crypto.createHmac('sha256', secret).update(userId).digest('hex');

  // Laptop: setUser queued before the script loads.
  const laptopCtx = await hostContext(site.widget_key, EVENTS_HEAD + `
    kefu('setUser', { user_id: ${JSON.stringify(userId)}, user_hash: ${JSON.stringify(hash)}, name: 'Mei Lin', email: 'mei@example.com' });`);
  const laptop = await watchedPage(laptopCtx);
  await laptop.goto(laptopCtx.url);
  await widget.open(laptop);
  const first = 'Sent from the laptop ' + Date.now();
  await widget.send(laptop, first);
  await waitUntil(async () => (await widget.bodies(laptop)).includes(first), { what: 'laptop message acknowledged' });
  const conv = await waitUntil(() => conversationWith(first), { what: 'the conversation' });
  assert.equal(conv.visitor.user_id, userId);
  await waitUntil(async () => (await call('GET', '/api/conversations/' + conv.id, undefined, admin)).visitor.name === 'Mei Lin', { what: 'name from setUser' });

  // Phone: another browser context (no shared storage), the user as tag attributes.
  const phoneCtx = await hostContext(site.widget_key, EVENTS_HEAD, `data-user-id="${userId}" data-user-hash="${hash}"`);
  const phone = await watchedPage(phoneCtx);
  await phone.goto(phoneCtx.url);
  await widget.open(phone);
  await waitUntil(async () => (await widget.bodies(phone)).includes(first), { what: 'the laptop message on the phone' });
  const second = 'And from the phone ' + Date.now();
  await widget.send(phone, second);
  await waitUntil(async () => (await widget.bodies(laptop)).includes(second), { what: 'the phone message live on the laptop' });
  const tokens = await Promise.all([laptop, phone].map((p) => p.evaluate(() => Object.entries(localStorage).find(([k]) => k.endsWith(':token'))[1])));
  assert.notEqual(tokens[0], tokens[1], 'each browser has its own token');
  await screenshot(phone, 'widget-verified-user-phone');

  // A forged hash: refused with a clear reason, told to the page, no conversation shown.
  const forgedCtx = await hostContext(site.widget_key, EVENTS_HEAD + `
    kefu('setUser', { user_id: ${JSON.stringify(userId)}, user_hash: ${JSON.stringify(crypto.createHmac('sha256', 'guess').update(userId).digest('hex'))} });`);
  const forged = await watchedPage(forgedCtx);
  const warnings = [];
  forged.on('console', (m) => { if (m.type() === 'warning') warnings.push(m.text()); });
  await forged.goto(forgedCtx.url);
  await waitUntil(async () => (await events(forged, 'error')).length > 0, { timeout: 45000, what: 'the refused identity reported' });
  assert.match((await events(forged, 'error'))[0].message, /identity verification failed/);
  assert.ok(warnings.some((w) => /identity verification failed/.test(w)), 'a console warning for the developer');
  await widget.open(forged);
  assert.ok(!(await widget.bodies(forged)).includes(first), 'the forged page sees nothing of the customer');
  assert.equal((await events(forged, 'ready')).length, 0);

  // reset() on sign-out: a fresh anonymous visitor, the customer's messages gone from view.
  await laptop.evaluate(() => kefu.reset());
  await waitUntil(async () => !(await widget.bodies(laptop)).includes(first), { what: 'the conversation cleared after reset' });
  assertNoProblems(assert, laptop, phone);
  await Promise.all([laptopCtx.close(), phoneCtx.close(), forgedCtx.close()]);
});

test('outside business hours the widget shows the offline message and asks for an email; CSAT after resolve', { timeout: 90000 }, async () => {
  const day = [{ open: '00:00', close: '24:00' }];
  const today = new Date().toISOString().slice(0, 10);
  const site = await newSite({
    business_hours: { time_zone: 'UTC', weekly: { mon: day, tue: day, wed: day, thu: day, fri: day, sat: day, sun: day }, closed_dates: [today] },
  });
  const ctx = await hostContext(site.widget_key, '');
  const page = await watchedPage(ctx);
  await page.goto(ctx.url);
  await widget.open(page);
  const w = page.locator('[data-kefu-widget]');
  await waitUntil(async () => (await w.locator('.banner').isVisible()) && (await w.locator('.banner').textContent()) === 'We are closed now. We will reply by email.', { what: 'the offline message' });
  assert.match(await w.locator('.head .sub').textContent(), /closed/);
  const ask = w.locator('form.ask');
  await ask.waitFor({ state: 'visible' });
  await screenshot(page, 'widget-outside-business-hours');

  const text = 'Closed but asking ' + Date.now();
  await widget.send(page, text);
  await waitUntil(async () => (await widget.bodies(page)).includes(text), { what: 'message accepted outside hours' });
  await ask.locator('input[type=email]').fill('night-owl@example.com');
  await ask.locator('button').click();
  await waitUntil(async () => /night-owl@example.com/.test(await ask.textContent()), { what: 'the email confirmation' });
  const conv = await waitUntil(() => conversationWith(text), { what: 'the conversation' });
  await waitUntil(async () => (await call('GET', '/api/conversations/' + conv.id, undefined, admin)).visitor.email === 'night-owl@example.com', { what: 'the email on the visitor' });
  assert.equal(conv.status, 'pending', 'waits in the queue outside business hours');

  // Resolved: the widget asks for a rating and an optional comment; both reach agents.
  await call('POST', `/api/conversations/${conv.id}/resolve`, {}, admin);
  const rate = w.locator('.rate');
  await rate.waitFor({ state: 'visible' });
  await rate.getByRole('button', { name: 'Rate 4 of 5' }).click();
  await waitUntil(async () => /Thanks/.test(await rate.textContent()), { what: 'rating acknowledged' });
  await rate.locator('textarea').fill('Good, even at night');
  await rate.getByRole('button', { name: 'Send comment' }).click();
  await waitUntil(async () => /Comment sent/.test(await rate.textContent()), { what: 'comment acknowledged' });
  const rated = await call('GET', '/api/conversations/' + conv.id, undefined, admin);
  assert.equal(rated.rating, 4);
  assert.equal(rated.rating_comment, 'Good, even at night');
  // Changed: one rating, the new score.
  await rate.getByRole('button', { name: 'Rate 5 of 5' }).click();
  await waitUntil(async () => (await call('GET', '/api/conversations/' + conv.id, undefined, admin)).rating === 5, { what: 'the changed rating' });
  const csat = await call('GET', '/api/csat?site_id=' + site.id, undefined, admin);
  assert.equal(csat.responses, 1);
  assert.equal(csat.average, 5);
  await screenshot(page, 'widget-csat');
  assertNoProblems(assert, page);
  await ctx.close();
});

test('the console Sites dialog sets business hours and generates an identity secret shown once', { timeout: 90000 }, async () => {
  const site = await newSite({ name: 'Settings site ' + Date.now() });
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await watchedPage(ctx);
  await agentConsole.login(page);
  await page.locator('#open-sites').click();
  const section = page.locator(`.site-settings[data-site-id="${site.id}"]`);
  await section.waitFor();
  const form = section.locator('form.bh-form');
  await form.locator('.bh-enabled').check();
  await form.locator('.bh-tz').fill('Asia/Shanghai');
  await form.locator('tr[data-day="sat"] .bh-on').check();
  await form.locator('tr[data-day="sat"] .bh-open').fill('10:00');
  await form.locator('tr[data-day="sat"] .bh-close').fill('16:00');
  await form.locator('.bh-closed').fill('2027-02-06, 2027-02-07');
  await form.getByRole('button', { name: 'Save' }).click();
  await waitUntil(async () => (await form.locator('.bh-status').textContent()) === 'Saved.', { what: 'saved' });
  const saved = (await call('GET', '/api/sites', undefined, admin)).items.find((s) => s.id === site.id);
  assert.equal(saved.business_hours.time_zone, 'Asia/Shanghai');
  assert.deepEqual(saved.business_hours.weekly.sat, [{ open: '10:00', close: '16:00' }]);
  assert.deepEqual(saved.business_hours.weekly.mon, [{ open: '09:00', close: '18:00' }]);
  assert.deepEqual(saved.business_hours.weekly.sun, []);
  assert.deepEqual(saved.business_hours.closed_dates, ['2027-02-06', '2027-02-07']);
  await waitUntil(async () => /now/.test(await form.locator('.bh-now').textContent()), { what: 'open/closed now' });

  // A bad zone: the server's message, nothing saved.
  await form.locator('.bh-tz').fill('Mars/Base');
  await form.getByRole('button', { name: 'Save' }).click();
  await waitUntil(async () => /time zone/.test(await form.locator('.bh-status').textContent()), { what: 'the validation error' });

  // Identity secret: shown once after generating, then only its last characters.
  await section.getByRole('button', { name: 'Generate secret' }).click();
  const secretField = section.locator('.identity-secret');
  await secretField.waitFor();
  const secret = await secretField.inputValue();
  assert.match(secret, /^ks_[0-9a-f]{64}$/);
  await screenshot(page, 'console-sites');
  await page.locator('#sites-dialog').getByRole('button', { name: 'Close' }).click();
  await page.locator('#open-sites').click();
  await section.locator('.identity-state').waitFor();
  assert.equal(await section.locator('.identity-secret').count(), 0);
  assert.match(await section.locator('.identity-state').textContent(), new RegExp('On · secret …' + secret.slice(-4)));
  assert.ok(!(await page.content()).includes(secret), 'the secret is not on the page any more');
  assertNoProblems(assert, page);
  await ctx.close();
});
