// The server restarts mid-chat. Both sides reconnect by themselves, what was written while
// it was down is delivered once it is back, and every message appears exactly once on
// both sides, in the same order.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const {
  BASE, launch, watchedPage, waitUntil, widget, agentConsole, stopServer, startServer,
} = require('./lib/kefu');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

function unique(list) {
  return new Set(list).size === list.length;
}

test('a server restart mid-chat loses and duplicates nothing', { timeout: 180000 }, async () => {
  const agentCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const agent = await watchedPage(agentCtx);
  await agentConsole.login(agent);
  await agentConsole.goOnline(agent);

  const visitorCtx = await browser.newContext();
  const visitor = await watchedPage(visitorCtx);
  await visitor.goto(BASE() + '/');
  await widget.open(visitor);

  const tag = 'restart-' + Date.now();
  const v1 = tag + ' visitor before';
  await widget.send(visitor, v1);
  await waitUntil(async () => (await widget.bodies(visitor)).includes(v1), { what: 'v1 ack' });
  const item = agentConsole.conversation(agent, v1);
  await item.waitFor();
  await item.locator('button').click();
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(v1), { what: 'v1 in the console' });
  const a1 = tag + ' agent before';
  await agentConsole.reply(agent, a1);
  await waitUntil(async () => (await widget.bodies(visitor)).includes(a1), { what: 'a1 in the widget' });

  // Down: both sides notice and keep what is written meanwhile as pending.
  await stopServer();
  await waitUntil(async () => (await agent.locator('#conn').getAttribute('data-state')) === 'reconnecting', { what: 'console to notice the restart' });
  await waitUntil(() => visitor.locator('[data-kefu-widget] .conn').isVisible(), { what: 'widget to show it is reconnecting' });
  const v2 = tag + ' visitor while down';
  await widget.send(visitor, v2);
  const a2 = tag + ' agent while down';
  await agentConsole.reply(agent, a2);
  assert.equal(await widget.pending(visitor), 1, 'the visitor message waits as pending');
  assert.equal(await agent.locator('#outbox li').count(), 1, 'the reply waits as pending');

  // Up again: everything is delivered, once.
  await startServer();
  const expected = [v1, a1, v2, a2];
  const sameSet = (got) => got.length === expected.length && expected.every((x) => got.includes(x));
  await waitUntil(async () => sameSet(await widget.bodies(visitor)), { timeout: 60000, what: 'all four messages in the widget' });
  await waitUntil(async () => sameSet(await agentConsole.bodies(agent)), { timeout: 60000, what: 'all four messages in the console' });
  await waitUntil(async () => (await agent.locator('#conn').getAttribute('data-state')) === 'live', { what: 'console live again' });

  // After both sides settled and a further exchange, still exactly once each.
  const v3 = tag + ' visitor after';
  await widget.send(visitor, v3);
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(v3), { what: 'v3 live in the console after the restart' });
  const a3 = tag + ' agent after';
  await agentConsole.reply(agent, a3);
  await waitUntil(async () => (await widget.bodies(visitor)).includes(a3), { what: 'a3 live in the widget after the restart' });
  await visitor.waitForTimeout(1000);

  const vb = await widget.bodies(visitor);
  const ab = await agentConsole.bodies(agent);
  assert.deepEqual(vb, ab, 'both sides show the same messages in the same order');
  assert.equal(vb.length, 6);
  for (const m of [v1, a1, v2, a2, v3, a3]) {
    assert.equal(vb.filter((x) => x === m).length, 1, `once in the widget: ${m}`);
  }
  assert.ok(unique(await widget.seqs(visitor)), 'no seq twice in the widget');
  assert.ok(unique(await agentConsole.seqs(agent)), 'no seq twice in the console');
  assert.equal(await widget.pending(visitor), 0);
  assert.equal(await agent.locator('#outbox li').count(), 0);
  await agent.locator('#act-resolve').click();
  await waitUntil(async () => /Resolved/.test(await agent.locator('#thread-sub').textContent()), { what: 'resolved' });
  assert.deepEqual(visitor.problems.dialogs, []);
  assert.deepEqual(agent.problems.errors, []);
  await visitorCtx.close();
  await agentCtx.close();
});
