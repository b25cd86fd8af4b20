// Markup typed by a visitor is text everywhere: as a message and as the visitor's name,
// in the widget and in the console, and nothing it carries ever runs.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BASE, launch, watchedPage, waitUntil, widget, agentConsole, assertNoProblems } = require('./lib/kefu');

const EVIL = '<img src=x onerror=alert(1)>';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('markup in a message and a visitor name shows as text and runs nothing', async () => {
  const agentCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const agent = await watchedPage(agentCtx);
  await agentConsole.login(agent);
  await agentConsole.goOnline(agent);

  const visitorCtx = await browser.newContext();
  const visitor = await watchedPage(visitorCtx);
  await visitor.goto(BASE() + '/');
  await widget.open(visitor);
  // The host page names its visitor through the public API.
  await visitor.evaluate((name) => window.Kefu.identify({ name }), EVIL);
  const marker = 'xss-check ' + Date.now();
  await widget.send(visitor, marker);
  await widget.send(visitor, EVIL);
  await waitUntil(async () => (await widget.bodies(visitor)).includes(EVIL), { what: 'the markup message acknowledged' });

  // Widget: the text is there, no <img> was created anywhere in the panel.
  assert.equal(await visitor.locator('[data-kefu-widget] .panel img').count(), 0);

  // Console: the conversation shows the name and the message as text.
  const item = agentConsole.conversation(agent, EVIL);
  await item.waitFor();
  await item.locator('button').click();
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(EVIL), { what: 'the markup message in the console' });
  await waitUntil(async () => (await agent.locator('#thread-title').textContent()) === EVIL, { what: 'the markup name as the thread title' });
  await waitUntil(async () => (await agent.locator('#profile-fields').textContent()).includes(EVIL), { what: 'the markup name in the profile' });
  assert.equal(await agent.locator('#conversations img, #messages img, #profile img, #thread img').count(), 0);

  // The agent answers with markup too; the widget shows it as text.
  await agentConsole.reply(agent, '<b>bold?</b> ' + EVIL);
  await waitUntil(async () => (await widget.bodies(visitor)).includes('<b>bold?</b> ' + EVIL), { what: 'markup reply in the widget' });
  assert.equal(await visitor.locator('[data-kefu-widget] .panel img, [data-kefu-widget] .panel b').count(), 0);

  await agent.locator('#act-resolve').click();
  await waitUntil(async () => /Resolved/.test(await agent.locator('#thread-sub').textContent()), { what: 'resolved' });
  // Give any image error handler the time it would need to fire.
  await visitor.waitForTimeout(500);
  assertNoProblems(assert, visitor, agent);
  await visitorCtx.close();
  await agentCtx.close();
});

test('pages answer with a strict CSP, right content types and cache headers', async () => {
  const key = encodeURIComponent(process.env.KEFU_SITE_KEY);
  for (const path of ['/', '/chat?site=' + key, '/console']) {
    const r = await fetch(BASE() + path);
    assert.equal(r.status, 200, path);
    assert.match(r.headers.get('content-type'), /^text\/html; charset=utf-8/, path);
    const csp = r.headers.get('content-security-policy') || '';
    assert.match(csp, /script-src 'self'/, path);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, path);
    assert.match(csp, /default-src 'none'/, path);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff', path);
    const html = await r.text();
    assert.doesNotMatch(html, /<script>|<script [^>]*>[^<]/, `${path} has an inline script`);
  }
  const js = await fetch(BASE() + '/widget.js');
  assert.equal(js.status, 200);
  assert.match(js.headers.get('content-type'), /^text\/javascript/);
  assert.match(js.headers.get('cache-control'), /max-age=\d+/);
  const etag = js.headers.get('etag');
  assert.ok(etag, 'widget.js has an ETag');
  const again = await fetch(BASE() + '/widget.js', { headers: { 'if-none-match': etag } });
  assert.equal(again.status, 304);
  for (const [asset, type] of [['console.js', /^text\/javascript/], ['console.css', /^text\/css/], ['page.css', /^text\/css/]]) {
    const r = await fetch(BASE() + '/assets/' + asset);
    assert.equal(r.status, 200, asset);
    assert.match(r.headers.get('content-type'), type, asset);
  }
  assert.equal((await fetch(BASE() + '/assets/nope.js')).status, 404);
});
