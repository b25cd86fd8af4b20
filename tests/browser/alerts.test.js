// Alerts: with "Alerts on" the console plays a sound for a new conversation or message and,
// while the agent is in another tab, shows a desktop notification; "Alerts off" silences
// both, and the choice survives a reload.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BASE, launch, watchedPage, waitUntil, widget, agentConsole, assertNoProblems } = require('./lib/kefu');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/**
 * Counts what the console does through the real browser APIs: every tone it starts
 * (AudioContext oscillators) and every desktop notification it creates (the real
 * Notification, with permission granted). `window.__away = true` stands for the agent
 * having switched to another tab (headless pages are always "visible").
 */
function spyOnAlerts() {
  window.__tones = 0;
  window.__notes = [];
  window.__away = false;
  const start = OscillatorNode.prototype.start;
  OscillatorNode.prototype.start = function (...args) {
    window.__tones++;
    return start.apply(this, args);
  };
  const Real = window.Notification;
  window.Notification = new Proxy(Real, {
    construct(target, args) {
      window.__notes.push({ title: args[0], body: args[1] && args[1].body });
      return Reflect.construct(target, args);
    },
  });
  const visibility = Object.getOwnPropertyDescriptor(Document.prototype, 'visibilityState');
  Object.defineProperty(Document.prototype, 'visibilityState', {
    configurable: true,
    get() { return window.__away ? 'hidden' : visibility.get.call(this); },
  });
}

test('alerts sound and notify for new conversations and messages, and can be turned off', { timeout: 120000 }, async () => {
  const agentCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  await agentCtx.grantPermissions(['notifications'], { origin: BASE() });
  await agentCtx.addInitScript(spyOnAlerts);
  const agent = await watchedPage(agentCtx);
  await agentConsole.login(agent);
  await agentConsole.goOnline(agent);
  const alerts = agent.locator('#alerts');
  const tones = () => agent.evaluate(() => window.__tones);
  const notes = () => agent.evaluate(() => window.__notes);

  const visitorCtx = await browser.newContext();
  const visitor = await watchedPage(visitorCtx);
  await visitor.goto(BASE() + '/');
  await widget.open(visitor);

  // Off (the default): a new conversation makes no sound.
  assert.equal(await alerts.textContent(), 'Alerts off');
  const tag = 'alerts-' + Date.now();
  await widget.send(visitor, tag + ' first');
  await agentConsole.conversation(agent, tag + ' first').waitFor();
  await agent.waitForTimeout(500);
  assert.equal(await tones(), 0, 'no sound while alerts are off');

  // On: a message in a conversation the agent is not looking at sounds.
  await alerts.click();
  assert.equal(await alerts.textContent(), 'Alerts on');
  assert.equal(await alerts.getAttribute('aria-pressed'), 'true');
  await widget.send(visitor, tag + ' second');
  await waitUntil(async () => (await tones()) === 1, { what: 'a tone for the new message' });

  // In another tab: a desktop notification too, naming the message.
  await agent.evaluate(() => { window.__away = true; });
  await widget.send(visitor, tag + ' third');
  await waitUntil(async () => (await notes()).some((n) => n.body === tag + ' third'), { what: 'a desktop notification' });
  assert.match((await notes()).find((n) => n.body === tag + ' third').title, /New message from/);
  assert.equal(await tones(), 2);

  // A new conversation notifies as well.
  const otherCtx = await browser.newContext();
  const other = await watchedPage(otherCtx);
  await other.goto(BASE() + '/');
  await widget.open(other);
  await widget.send(other, tag + ' another visitor');
  await waitUntil(async () => (await notes()).some((n) => n.title === 'New conversation'), { what: 'a new-conversation notification' });
  await agent.evaluate(() => { window.__away = false; });

  // Off again: silence, and the choice is remembered after a reload.
  await alerts.click();
  assert.equal(await alerts.textContent(), 'Alerts off');
  const before = { tones: await tones(), notes: (await notes()).length };
  await agent.evaluate(() => { window.__away = true; });
  await widget.send(visitor, tag + ' fourth');
  await waitUntil(async () => (await agent.locator('#conversations li.conv', { hasText: tag + ' fourth' }).count()) === 1, { what: 'the fourth message in the list' });
  await agent.waitForTimeout(500);
  assert.equal(await tones(), before.tones, 'no sound after turning alerts off');
  assert.equal((await notes()).length, before.notes, 'no notification after turning alerts off');
  await agent.reload();
  await agent.locator('#conn[data-state="live"]').waitFor();
  assert.equal(await alerts.textContent(), 'Alerts off');

  assertNoProblems(assert, visitor, agent, other);
  await otherCtx.close();
  await visitorCtx.close();
  await agentCtx.close();
});
