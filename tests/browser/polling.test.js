// Where WebSocket is blocked, the widget falls back to HTTP long-polling with the same
// guarantees: live replies, typing and read status both ways, acks, resume after a reload,
// nothing twice.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BASE, launch, watchedPage, waitUntil, widget, agentConsole, assertNoProblems } = require('./lib/kefu');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

/** A proxy that refuses WebSocket upgrades: every socket closes before it opens. */
function blockWebSocket() {
  window.WebSocket = class BlockedWebSocket {
    constructor() {
      this.readyState = 3;
      setTimeout(() => this.onclose && this.onclose({ code: 1006 }), 10);
    }
    send() { throw new Error('blocked'); }
    close() {}
  };
  window.WebSocket.OPEN = 1;
}

test('the widget falls back to long-polling when WebSocket is blocked', { timeout: 120000 }, async () => {
  const agentCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const agent = await watchedPage(agentCtx);
  await agentConsole.login(agent);
  await agentConsole.goOnline(agent);

  const visitorCtx = await browser.newContext();
  await visitorCtx.addInitScript(blockWebSocket);
  const visitor = await watchedPage(visitorCtx);
  const polls = [];
  visitor.on('request', (r) => { if (r.url().includes('/api/visitor/')) polls.push(r.url()); });
  await visitor.goto(BASE() + '/');
  await widget.open(visitor);
  const host = visitor.locator('[data-kefu-widget]');
  await waitUntil(async () => (await host.getAttribute('data-transport')) === 'polling', { timeout: 30000, what: 'the polling transport' });

  const first = 'polling hello ' + Date.now();
  await widget.send(visitor, first);
  await waitUntil(async () => (await widget.bodies(visitor)).includes(first), { what: 'ack over HTTP' });
  const item = agentConsole.conversation(agent, first);
  await item.waitFor();
  await item.locator('button').click();
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(first), { what: 'the polled message in the console' });
  await waitUntil(async () => (await widget.headerName(visitor)) === 'Alice Chen', { what: 'assignee over polling' });

  // Agent typing and the reply reach the waiting poll.
  await agent.locator('#reply-text').pressSequentially('One moment', { delay: 20 });
  await waitUntil(async () => /is typing/.test(await widget.typing(visitor)), { what: 'typing over polling' });
  const reply = 'Replying over long-polling';
  await agentConsole.reply(agent, reply);
  await waitUntil(async () => (await widget.bodies(visitor)).includes(reply), { what: 'the reply over polling' });

  // Read status both ways, as over the socket: the agent had the conversation open (its
  // read receipt reached the visitor between or during polls), the visitor had the panel
  // open (its receipt went up through POST /api/visitor/send).
  await waitUntil(async () => (await visitor.locator('[data-kefu-widget] .msg.mine .meta').last().textContent()).includes('Read'), { what: '"Read" under the visitor message over polling' });
  await waitUntil(async () => (await agent.locator('#messages .outgoing .meta').last().textContent()).includes('Seen'), { what: '"Seen" under the reply from a polling visitor' });

  // Typing that starts and stops while no poll is waiting still reaches the widget: the
  // next poll replays it (its ev cursor), so the indicator shows and then clears.
  await waitUntil(async () => (await widget.typing(visitor)).trim() === '', { what: 'typing cleared after the reply' });
  await agent.locator('#reply-text').pressSequentially('Anything else', { delay: 20 });
  await waitUntil(async () => /is typing/.test(await widget.typing(visitor)), { what: 'typing again over polling' });
  await agent.locator('#reply-text').fill('');
  await waitUntil(async () => (await widget.typing(visitor)).trim() === '', { timeout: 5000, what: 'typing off over polling (before the 6 s fallback)' });

  // Visitor typing reaches the console through POST /api/visitor/send.
  await widget.input(visitor).pressSequentially('and also', { delay: 20 });
  await waitUntil(async () => /is typing/.test(await agent.locator('#visitor-typing').textContent()), { what: 'visitor typing over polling' });
  await widget.input(visitor).fill('');

  // Reload: the history comes back over polling, once.
  await visitor.reload();
  await widget.panel(visitor).waitFor({ state: 'visible' });
  await waitUntil(async () => (await widget.bodies(visitor)).length === 2, { timeout: 30000, what: 'history after reload over polling' });
  assert.deepEqual(await widget.bodies(visitor), [first, reply]);
  const second = 'second over polling';
  await widget.send(visitor, second);
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes(second), { what: 'second message in the console' });
  await visitor.waitForTimeout(500);
  assert.deepEqual(await widget.bodies(visitor), [first, reply, second]);
  assert.deepEqual(await agentConsole.bodies(agent), [first, reply, second]);
  assert.ok(polls.some((u) => u.includes('/api/visitor/poll')), 'the widget long-polled');

  assertNoProblems(assert, visitor, agent);
  await visitorCtx.close();
  await agentCtx.close();
});
