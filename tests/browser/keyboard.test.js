// Keyboard use and private notes: the widget opens and closes from the keyboard, Enter
// sends and Shift+Enter makes a new line (in the widget and the console), and a private
// note stays among agents — the visitor never sees it.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BASE, launch, watchedPage, waitUntil, widget, agentConsole, assertNoProblems } = require('./lib/kefu');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('keyboard only: Enter sends, Shift+Enter breaks the line; private notes stay private', { timeout: 120000 }, async () => {
  const agentCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const agent = await watchedPage(agentCtx);
  await agentConsole.login(agent);
  await agentConsole.goOnline(agent);

  const visitorCtx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const visitor = await watchedPage(visitorCtx);
  await visitor.goto(BASE() + '/');
  const launcher = widget.launcher(visitor);
  await launcher.waitFor();
  assert.equal(await launcher.getAttribute('aria-label'), 'Open chat');

  // The launcher is a labelled button: focus it, press Enter, type straight away.
  await launcher.focus();
  await visitor.keyboard.press('Enter');
  await widget.panel(visitor).waitFor({ state: 'visible' });
  assert.equal(await launcher.getAttribute('aria-expanded'), 'true');
  const input = widget.input(visitor);
  await waitUntil(() => input.evaluate((e) => e.getRootNode().activeElement === e), { what: 'the message box focused on open' });
  const tag = 'kbd-' + Date.now();
  await visitor.keyboard.type(tag + ' line one');
  await visitor.keyboard.press('Shift+Enter');
  await visitor.keyboard.type('line two');
  assert.equal(await input.inputValue(), tag + ' line one\nline two', 'Shift+Enter adds a line, sends nothing');
  await visitor.keyboard.press('Enter');
  const twoLines = tag + ' line one\nline two';
  await waitUntil(async () => (await widget.bodies(visitor)).includes(twoLines), { what: 'the two-line message acknowledged' });
  assert.equal(await input.inputValue(), '');

  // Escape closes the panel and gives the focus back to the launcher.
  await visitor.keyboard.press('Escape');
  await widget.panel(visitor).waitFor({ state: 'hidden' });
  assert.equal(await launcher.evaluate((e) => e.getRootNode().activeElement === e), true);
  await launcher.click();
  await widget.panel(visitor).waitFor({ state: 'visible' });

  // The console: the message keeps its line break; a private note, then a reply.
  const item = agentConsole.conversation(agent, tag);
  await item.waitFor();
  await item.locator('button').click();
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(twoLines), { what: 'the two-line message in the console' });
  await agent.locator('input[name="mode"][value="note"]').check();
  assert.equal(await agent.locator('#reply-send').textContent(), 'Add note');
  const note = tag + ' note: customer is a VIP';
  await agent.locator('#reply-text').fill(note);
  await agent.locator('#reply-text').press('Enter');
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(note), { what: 'the note in the console' });
  assert.equal(await agent.locator('#messages li.note', { hasText: note }).count(), 1, 'shown as a note');
  await agent.locator('input[name="mode"][value="reply"]').check();
  await agent.locator('#reply-text').focus();
  await agent.keyboard.type('Thanks!');
  await agent.keyboard.press('Shift+Enter');
  await agent.keyboard.type('Checking now.');
  await agent.keyboard.press('Enter');
  const reply = 'Thanks!\nChecking now.';
  await waitUntil(async () => (await widget.bodies(visitor)).includes(reply), { what: 'the two-line reply in the widget' });
  await visitor.waitForTimeout(500);
  assert.deepEqual(await widget.bodies(visitor), [twoLines, reply], 'the visitor never sees the note');

  // After a reload (history from the server) the note is still not there.
  await visitor.reload();
  await widget.panel(visitor).waitFor({ state: 'visible' });
  await waitUntil(async () => (await widget.bodies(visitor)).length === 2, { what: 'history after reload' });
  assert.deepEqual(await widget.bodies(visitor), [twoLines, reply]);

  assertNoProblems(assert, visitor, agent);
  await agent.locator('#act-resolve').click();
  await visitorCtx.close();
  await agentCtx.close();
});
