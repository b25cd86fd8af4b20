// Workflow features in the console (issue 9): an image the visitor sends shows in the
// console (and in the widget); /shortcut inserts a canned response; the inbox filters by
// label; search finds a Chinese message and opens its conversation.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  BASE, env, launch, watchedPage, screenshot, waitUntil, widget, agentConsole, assertNoProblems,
} = require('./lib/kefu');

// A 2×2 red PNG.
const PNG = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAEElEQVR4nGP4z8AARAwQCgAf7gP9i18U1AAAAABJRU5ErkJggg==', 'base64');

let browser;
let admin;
before(async () => {
  browser = await launch();
  admin = await api('POST', '/api/auth/login', { email: env('KEFU_ADMIN_EMAIL'), password: env('KEFU_ADMIN_PASSWORD') });
});
after(async () => { await browser?.close(); });

async function api(method, path, body, token) {
  const r = await fetch(BASE() + path, {
    method,
    headers: Object.assign({ 'content-type': 'application/json' }, token ? { authorization: 'Bearer ' + token } : {}),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(data)}`);
  return data;
}

async function consolePage() {
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const page = await watchedPage(ctx);
  await agentConsole.login(page);
  await agentConsole.goOnline(page);
  return { ctx, page };
}

async function visitorPage(text) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await watchedPage(ctx);
  await page.goto(BASE() + '/');
  await widget.open(page);
  await widget.send(page, text);
  await waitUntil(async () => (await widget.bodies(page)).includes(text), { what: 'the visitor message acked' });
  return { ctx, page };
}

async function openInConsole(page, text) {
  const item = agentConsole.conversation(page, text);
  await item.waitFor({ timeout: 15000 });
  await item.locator('button').click();
  await waitUntil(async () => (await agentConsole.bodies(page)).includes(text), { what: 'the conversation open in the console' });
}

test('an image the visitor sends shows in the console', { timeout: 120000 }, async () => {
  const agent = await consolePage();
  const text = 'photo of the damaged box ' + Date.now();
  const visitor = await visitorPage(text);

  await openInConsole(agent.page, text);

  await visitor.page.locator('[data-kefu-widget] input[type=file]').setInputFiles({ name: 'box.png', mimeType: 'image/png', buffer: PNG });
  // The widget shows its own image (read back with its token).
  await waitUntil(() => visitor.page.locator('[data-kefu-widget] ol.log .file img').evaluate((img) => img.complete && img.naturalWidth === 2),
    { what: 'the image in the widget' });

  // It arrives live in the open conversation, and the inbox preview names the file.
  const img = agent.page.locator('#messages img.att-image');
  await waitUntil(() => img.evaluate((i) => i.complete && i.naturalWidth === 2 && i.src.startsWith('blob:')), { what: 'the image in the console' });
  assert.equal(await img.getAttribute('alt'), 'box.png');
  await waitUntil(async () => /📎 box\.png/.test(await agentConsole.conversation(agent.page, 'box.png').textContent()), { what: 'the inbox preview' });
  await screenshot(agent.page, 'console-attachment');

  // The agent sends a file back; the visitor gets a download button, not a page.
  await agent.page.locator('#attach-input').setInputFiles({ name: 'receipt.txt', mimeType: 'text/html', buffer: Buffer.from('receipt 42 <b>not html</b>\n') });
  await agent.page.locator('#reply-attachments .pending-att.ready').waitFor();
  await agent.page.locator('#reply-text').fill('Here is your receipt');
  await agent.page.locator('#reply-text').press('Enter');
  const doc = visitor.page.locator('[data-kefu-widget] ol.log .file.doc');
  await doc.waitFor();
  assert.match(await doc.textContent(), /receipt\.txt/);

  assertNoProblems(assert, agent.page, visitor.page);
  await Promise.all([agent.ctx.close(), visitor.ctx.close()]);
});

test('typing /shortcut inserts a canned response', { timeout: 120000 }, async () => {
  await api('POST', '/api/canned_responses', { shortcut: 'thanks', body: 'Thank you for contacting Acme!', shared: true }, admin.token);
  await api('POST', '/api/canned_responses', { shortcut: 'tracking', body: 'Your tracking number is in the email we sent.' }, admin.token);
  const agent = await consolePage();
  const text = 'canned please ' + Date.now();
  const visitor = await visitorPage(text);
  await openInConsole(agent.page, text);

  const box = agent.page.locator('#reply-text');
  await box.pressSequentially('/t', { delay: 30 });
  const suggest = agent.page.locator('#canned-suggest');
  await suggest.waitFor({ state: 'visible' });
  assert.equal(await suggest.locator('li').count(), 2);
  await box.pressSequentially('ha', { delay: 30 });
  await waitUntil(async () => (await suggest.locator('li').count()) === 1, { what: 'only /thanks left' });
  const before = (await agentConsole.bodies(agent.page)).length;
  await box.press('Enter'); // inserts, does not send
  assert.equal(await box.inputValue(), 'Thank you for contacting Acme!');
  assert.equal(await suggest.isHidden(), true);
  assert.equal((await agentConsole.bodies(agent.page)).length, before, 'Enter inserted instead of sending');

  // Tab inserts too, in the middle of a sentence; Escape closes without inserting.
  await box.fill('');
  await box.pressSequentially('Hi! /trac', { delay: 30 });
  await suggest.waitFor({ state: 'visible' });
  await box.press('Tab');
  assert.equal(await box.inputValue(), 'Hi! Your tracking number is in the email we sent.');
  await box.pressSequentially(' /th', { delay: 30 });
  await suggest.waitFor({ state: 'visible' });
  await box.press('Escape');
  assert.equal(await suggest.isHidden(), true);
  await box.fill('Thank you for contacting Acme!');
  await box.press('Enter');
  await waitUntil(async () => (await widget.bodies(visitor.page)).includes('Thank you for contacting Acme!'), { what: 'the reply in the widget' });

  assertNoProblems(assert, agent.page, visitor.page);
  await Promise.all([agent.ctx.close(), visitor.ctx.close()]);
});

test('the inbox filters by label', { timeout: 120000 }, async () => {
  const vip = await api('POST', '/api/labels', { name: 'VIP ' + Date.now(), color: '#dc2626' }, admin.token);
  const agent = await consolePage();
  const one = 'label me ' + Date.now();
  const v1 = await visitorPage(one);
  const two = 'leave me ' + Date.now();
  const v2 = await visitorPage(two);
  await agentConsole.conversation(agent.page, two).waitFor();
  await openInConsole(agent.page, one);
  await agent.page.locator('#label-add').selectOption(vip.id);
  await agent.page.locator('#thread-labels .label-chip', { hasText: vip.name }).waitFor();
  // The chip shows in the inbox row too.
  await agentConsole.conversation(agent.page, one).locator('.label-chip', { hasText: vip.name }).waitFor();

  await agent.page.locator(`[data-label="${vip.id}"]`).click();
  await waitUntil(async () => (await agentConsole.conversation(agent.page, two).count()) === 0, { what: 'the unlabelled one filtered out' });
  assert.equal(await agentConsole.conversation(agent.page, one).count(), 1);
  await screenshot(agent.page, 'console-label-filter');
  await agent.page.locator(`[data-label="${vip.id}"]`).click();
  await agentConsole.conversation(agent.page, two).waitFor();

  assertNoProblems(assert, agent.page, v1.page, v2.page);
  await Promise.all([agent.ctx.close(), v1.ctx.close(), v2.ctx.close()]);
});

test('search finds a Chinese message and opens its conversation', { timeout: 120000 }, async () => {
  const agent = await consolePage();
  const text = '你好，我要退款，订单号 ' + Date.now();
  const visitor = await visitorPage(text);
  await agentConsole.conversation(agent.page, text).waitFor();
  await widget.send(visitor.page, 'Or a refund by bank transfer');
  await waitUntil(async () => (await widget.bodies(visitor.page)).includes('Or a refund by bank transfer'), { what: 'the second message acked' });

  await agent.page.locator('#search-q').fill('退款');
  await agent.page.locator('#search-q').press('Enter');
  const hit = agent.page.locator('#search-messages li', { hasText: text.slice(-8) });
  await hit.waitFor();
  assert.equal(await hit.locator('mark').first().textContent(), '退款');
  await screenshot(agent.page, 'console-search');
  await hit.locator('button').click();
  await waitUntil(async () => (await agentConsole.bodies(agent.page)).includes(text), { what: 'the conversation opened from the hit' });

  // English, stemmed: "refunds" finds "refund".
  await agent.page.locator('#search-q').fill('refunds');
  await agent.page.locator('#search-q').press('Enter');
  await agent.page.locator('#search-messages li', { hasText: 'Or a refund by bank transfer' }).waitFor();
  await agent.page.locator('#search-close').click();
  assert.equal(await agent.page.locator('#search-results').isHidden(), true);

  assertNoProblems(assert, agent.page, visitor.page);
  await Promise.all([agent.ctx.close(), visitor.ctx.close()]);
});
