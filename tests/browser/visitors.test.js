// The agent sees who is on the site now — page, site, time on site — and greets a visitor
// first: the greeting pops up beside the widget's launcher with the unread badge, the
// visitor answers, and the agent sees the answer in the conversation the greeting opened.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  BASE, launch, watchedPage, screenshot, waitUntil, widget, agentConsole, assertNoProblems,
} = require('./lib/kefu');

const EVIL = '<img src=x onerror=alert(1)>';

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('an agent greets a visitor from the online list; the visitor sees it and answers', { timeout: 120000 }, async () => {
  const agentCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const agent = await watchedPage(agentCtx);
  await agentConsole.login(agent);
  await agentConsole.goOnline(agent);
  await agent.locator('#visitors-nav').click();
  await agent.locator('#visitors-pane').waitFor({ state: 'visible' });

  // A visitor arrives on a page of the shop; the agent's list shows it live.
  const tag = 'shoes-' + Date.now();
  const visitorCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const visitor = await watchedPage(visitorCtx);
  await visitor.goto(BASE() + '/?product=' + tag, { referer: 'https://search.example/?q=running+shoes' });
  await widget.launcher(visitor).waitFor();
  const entry = agent.locator('#visitors li.visitor', { has: agent.locator(`a.v-page[href*="${tag}"]`) });
  await entry.waitFor({ timeout: 20000 });
  assert.match(await entry.locator('.v-site').textContent(), /Acme Store/);
  assert.match(await entry.locator('.v-ref').textContent(), /search\.example/);
  assert.match(await entry.locator('.v-time').textContent(), /^\d+ s$|min/);
  assert.ok(Number(await agent.locator('#visitors-count').textContent()) >= 1, 'the sidebar counts visitors online');

  // The host page names the visitor: the list follows live.
  await visitor.evaluate(() => window.Kefu.identify({ name: 'Maria Lopez', email: 'maria@example.com' }));
  await waitUntil(async () => (await entry.locator('.v-name').textContent()) === 'Maria Lopez', { what: 'the visitor name in the list' });
  await screenshot(agent, 'console-visitors');
  // Markup in a name stays text in the list.
  await visitor.evaluate((name) => window.Kefu.identify({ name }), EVIL);
  await waitUntil(async () => (await entry.locator('.v-name').textContent()) === EVIL, { what: 'the markup name in the list, as text' });
  assert.equal(await agent.locator('#visitors img').count(), 0);

  // Greet: the conversation opens for the agent, assigned to them.
  await entry.locator('.v-greet').click();
  const greeting = 'Hi! Looking for running shoes? I can help with sizes.';
  await entry.locator('.v-draft').fill(greeting);
  await entry.locator('.v-draft').press('Enter');
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(greeting), { what: 'the greeting in the opened conversation' });
  await waitUntil(async () => /Assigned to Alice Chen/.test(await agent.locator('#thread-sub').textContent()), { what: 'assigned to the greeting agent' });
  assert.equal(await agent.locator('#thread-title').textContent(), EVIL);

  // The visitor, panel closed, sees the greeting beside the launcher with the badge.
  const badge = visitor.locator('[data-kefu-widget] .badge');
  const teaser = visitor.locator('[data-kefu-widget] .teaser');
  await waitUntil(async () => (await badge.isVisible()) && (await badge.textContent()) === '1', { what: 'the unread badge for the greeting' });
  await teaser.waitFor({ state: 'visible' });
  assert.equal(await teaser.locator('.teaser-text').textContent(), greeting);
  assert.equal(await teaser.locator('.teaser-who').textContent(), 'Alice Chen');
  await screenshot(visitor, 'widget-greeted');

  // A click on the preview opens the chat with the greeting in it.
  await teaser.click();
  await widget.panel(visitor).waitFor({ state: 'visible' });
  await waitUntil(async () => (await widget.bodies(visitor)).includes(greeting), { what: 'the greeting in the widget' });
  await waitUntil(async () => !(await badge.isVisible()), { what: 'the badge to clear' });
  assert.equal(await widget.headerName(visitor), 'Alice Chen');

  // The visitor answers; the agent sees it live in the same conversation.
  const answer = 'Yes please, I need size 42.';
  await widget.send(visitor, answer);
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(answer), { what: "the visitor's answer in the console" });
  assert.deepEqual(await agentConsole.bodies(agent), [greeting, answer]);
  assert.deepEqual(await widget.bodies(visitor), [greeting, answer]);

  // Back in the list, the visitor is in a conversation now: no second greeting.
  await agent.locator('#visitors-nav').click();
  await waitUntil(async () => (await entry.locator('.v-status').count()) === 1, { what: 'the visitor shown in a conversation' });
  assert.equal(await entry.locator('.v-greet').count(), 0);
  await entry.locator('.v-open').click();
  await agent.locator('#thread-main').waitFor({ state: 'visible' });

  // The visitor leaves: the list forgets them after the grace period.
  await visitorCtx.close();
  await agent.locator('#visitors-nav').click();
  await entry.waitFor({ state: 'detached', timeout: 30000 });

  assertNoProblems(assert, visitor, agent);
  await agent.locator('#act-resolve').click();
  await agentCtx.close();
});
