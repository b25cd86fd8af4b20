// A visitor and an agent chat live: the message, the reply, typing both ways, read
// status, the agent's name in the widget, the visitor's page in the console, and a
// reload that keeps the conversation. Screenshots of both UIs along the way.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  BASE, launch, watchedPage, screenshot, waitUntil, widget, agentConsole, assertNoProblems,
} = require('./lib/kefu');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('visitor and agent chat live, with typing, read status and a reload', async () => {
  const agentCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const agent = await watchedPage(agentCtx);
  await agentConsole.login(agent);
  await agentConsole.goOnline(agent);

  const visitorCtx = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: 'de-DE' });
  const visitor = await watchedPage(visitorCtx);
  await visitor.goto(BASE() + '/?utm=browser-test', { referer: 'https://search.example/?q=acme' });
  await widget.launcher(visitor).waitFor();
  await waitUntil(async () => (await widget.headerName(visitor)) === 'Acme Store', { what: 'site name from /api/config' });
  await screenshot(visitor, 'widget-closed');

  await widget.open(visitor);
  const greeting = visitor.locator('[data-kefu-widget] .greeting .bubble');
  assert.equal(await greeting.textContent(), 'Hi there! Ask us anything about your order.');

  const first = 'Hello! Where is my order #1042?';
  await widget.send(visitor, first);
  // Pending until acknowledged, then confirmed exactly once.
  await waitUntil(async () => (await widget.bodies(visitor)).includes(first), { what: 'the ack of the first message' });
  assert.equal(await widget.pending(visitor), 0);

  // The agent sees it arrive live, without reloading.
  const item = agentConsole.conversation(agent, first);
  await item.waitFor({ timeout: 15000 });
  await item.locator('button').click();
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(first), { what: 'the message in the console' });

  // The widget learns who is answering.
  await waitUntil(async () => (await widget.headerName(visitor)) === 'Alice Chen', { what: "the agent's name in the widget" });

  // The console shows where the visitor is.
  const profile = agent.locator('#profile-fields');
  await waitUntil(async () => (await profile.textContent()).includes('/?utm=browser-test'), { what: 'page URL in the profile' });
  assert.match(await profile.textContent(), /de-DE/);

  // Typing, visitor -> agent.
  await widget.input(visitor).pressSequentially('Also, can I', { delay: 20 });
  await waitUntil(async () => /is typing/.test(await agent.locator('#visitor-typing').textContent()), { what: 'visitor typing in the console' });

  // Typing, agent -> visitor.
  await agent.locator('#reply-text').pressSequentially('Let me check', { delay: 20 });
  await waitUntil(async () => /Alice Chen is typing/.test(await widget.typing(visitor)), { what: 'agent typing in the widget' });

  const reply = 'Your order shipped yesterday. It arrives on Friday.';
  await agentConsole.reply(agent, reply);
  await waitUntil(async () => (await widget.bodies(visitor)).includes(reply), { what: 'the reply in the widget' });
  await waitUntil(async () => (await widget.typing(visitor)).trim() === '', { what: 'typing indicator to clear after the reply' });

  // Read status: the agent has the conversation open, so the visitor's message shows Read.
  await waitUntil(async () => (await visitor.locator('[data-kefu-widget] .msg.mine .meta').last().textContent()).includes('Read'), { what: '"Read" under the visitor message' });
  // And the visitor had the panel open, so the agent's reply shows Seen.
  await waitUntil(async () => (await agent.locator('#messages .outgoing .meta').last().textContent()).includes('Seen'), { what: '"Seen" under the reply' });

  await widget.input(visitor).fill('');
  await screenshot(visitor, 'widget-open');
  await agent.locator('#reply-text').fill('');
  await screenshot(agent, 'console');

  // Reload: same visitor, history restored once, the panel still open, chat continues.
  await visitor.reload();
  await widget.panel(visitor).waitFor({ state: 'visible' });
  await waitUntil(async () => (await widget.bodies(visitor)).length === 2, { what: 'history after reload' });
  assert.deepEqual(await widget.bodies(visitor), [first, reply]);
  const third = 'Great, thanks!';
  await widget.send(visitor, third);
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(third), { what: 'the message after reload in the same conversation' });
  assert.deepEqual(await agentConsole.bodies(agent), [first, reply, third]);
  assert.equal(await agent.locator('#conversations li.conv').filter({ hasText: third }).count(), 1);

  // Unread badge: a reply while the panel is closed.
  await widget.launcher(visitor).click();
  await widget.panel(visitor).waitFor({ state: 'hidden' });
  await agentConsole.reply(agent, 'You are welcome!');
  const badge = visitor.locator('[data-kefu-widget] .badge');
  await waitUntil(async () => (await badge.isVisible()) && (await badge.textContent()) === '1', { what: 'unread badge' });
  await screenshot(visitor, 'widget-unread');
  await widget.open(visitor);
  await waitUntil(async () => !(await badge.isVisible()), { what: 'badge to clear when opened' });

  // Resolve: the visitor is asked for a rating, the agent sees it; then reopen.
  await agent.locator('#act-resolve').click();
  await waitUntil(async () => /Resolved/.test(await agent.locator('#thread-sub').textContent()), { what: 'resolved in the console' });
  const rate = visitor.locator('[data-kefu-widget] .rate');
  await rate.waitFor({ state: 'visible' });
  await rate.getByRole('button', { name: 'Rate 5 of 5' }).click();
  await waitUntil(async () => /Thanks/.test(await rate.textContent()), { what: 'rating acknowledged' });
  await waitUntil(async () => (await agent.locator('#profile-fields').textContent()).includes('★★★★★'), { what: 'rating in the console' });
  await agent.locator('#act-reopen').click();
  await waitUntil(async () => !(/Resolved/.test(await agent.locator('#thread-sub').textContent())), { what: 'reopened' });
  await agent.locator('#act-resolve').click();

  assertNoProblems(assert, visitor, agent);
  await visitorCtx.close();
  await agentCtx.close();
});

test('the widget at phone width fills the screen and stays usable', async () => {
  const ctx = await browser.newContext({ viewport: { width: 375, height: 740 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const page = await watchedPage(ctx);
  await page.goto(BASE() + '/');
  await widget.open(page);
  const box = await widget.panel(page).boundingBox();
  assert.equal(Math.round(box.width), 375, 'panel spans the phone width');
  assert.equal(Math.round(box.height), 740, 'panel spans the phone height');
  await widget.send(page, 'Hi from my phone');
  await waitUntil(async () => (await widget.bodies(page)).includes('Hi from my phone'), { what: 'ack on the phone' });
  await screenshot(page, 'widget-phone');
  // The close button brings the launcher back.
  await page.locator('[data-kefu-widget] .close').click();
  await widget.launcher(page).waitFor({ state: 'visible' });
  assertNoProblems(assert, page);
  await ctx.close();
});

test('the full-page chat works from a link', async () => {
  const ctx = await browser.newContext({ viewport: { width: 1024, height: 700 } });
  const page = await watchedPage(ctx);
  await page.goto(BASE() + '/chat?site=' + encodeURIComponent(process.env.KEFU_SITE_KEY));
  await widget.panel(page).waitFor({ state: 'visible' });
  assert.equal(await widget.launcher(page).count(), 0, 'no launcher on the full page');
  await widget.send(page, 'Hello from the chat link');
  await waitUntil(async () => (await widget.bodies(page)).includes('Hello from the chat link'), { what: 'ack on /chat' });
  await screenshot(page, 'chat-page');
  assertNoProblems(assert, page);
  await ctx.close();
});

test('with nobody online the widget shows the offline message', async () => {
  const agentCtx = await browser.newContext();
  const agent = await watchedPage(agentCtx);
  await agentConsole.login(agent);
  await agent.locator('#presence').selectOption('offline');
  await waitUntil(async () => (await agent.locator('#presence-dot').getAttribute('data-status')) === 'offline', { what: 'status offline' });
  await agentCtx.close();

  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await watchedPage(ctx);
  // agents_online is cached for a moment on the server: allow a few tries.
  await waitUntil(async () => {
    await page.goto(BASE() + '/');
    // The panel remembers it was open (localStorage): a second try must not close it.
    await widget.launcher(page).waitFor();
    if (!(await widget.panel(page).isVisible())) await widget.open(page);
    const banner = page.locator('[data-kefu-widget] .banner');
    return (await banner.isVisible()) && (await banner.textContent()).includes('We are offline right now');
  }, { timeout: 20000, interval: 1000, what: 'the offline message' });
  assert.match(await page.locator('[data-kefu-widget] .sub').textContent(), /away/);
  await screenshot(page, 'widget-offline');
  assertNoProblems(assert, page);
  await ctx.close();
});

test('/chat works for a site limited to its own shop origin', async () => {
  const login = await fetch(BASE() + '/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: process.env.KEFU_ADMIN_EMAIL, password: process.env.KEFU_ADMIN_PASSWORD }),
  });
  const { token } = await login.json();
  const created = await fetch(BASE() + '/api/sites', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: 'Bearer ' + token },
    body: JSON.stringify({ name: 'Locked Shop', allowed_origins: ['https://shop.example'], greeting: 'Locked hello' }),
  });
  assert.equal(created.status, 201);
  const site = await created.json();
  const ctx = await browser.newContext();
  const page = await watchedPage(ctx);
  await page.goto(BASE() + '/chat?site=' + encodeURIComponent(site.widget_key));
  await widget.send(page, 'hello from a locked site');
  await waitUntil(async () => (await widget.bodies(page)).includes('hello from a locked site'), { what: 'ack on a locked site via /chat' });
  assertNoProblems(assert, page);
  await ctx.close();
});
