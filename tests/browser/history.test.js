// The console shows the newest page of a long conversation and loads older pages as the
// agent scrolls up, keeping order and showing nothing twice.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BASE, env, launch, watchedPage, waitUntil, widget, agentConsole, assertNoProblems } = require('./lib/kefu');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

async function login() {
  const r = await fetch(BASE() + '/api/auth/login', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: env('KEFU_ADMIN_EMAIL'), password: env('KEFU_ADMIN_PASSWORD') }),
  });
  assert.equal(r.status, 200);
  return (await r.json()).token;
}

test('older messages load on scroll, in order, once', { timeout: 300000 }, async () => {
  const agentCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const agent = await watchedPage(agentCtx);
  await agentConsole.login(agent);
  await agentConsole.goOnline(agent);

  const visitorCtx = await browser.newContext();
  const visitor = await watchedPage(visitorCtx);
  await visitor.goto(BASE() + '/');
  await widget.open(visitor);
  const first = 'history start ' + Date.now();
  await widget.send(visitor, first);
  await waitUntil(async () => (await widget.bodies(visitor)).includes(first), { what: 'first ack' });

  // 119 more messages from the agent side, through the API.
  const token = await login();
  const list = await (await fetch(BASE() + '/api/conversations?assignee=any&limit=200&status=open', { headers: { authorization: 'Bearer ' + token } })).json();
  const pend = await (await fetch(BASE() + '/api/conversations?assignee=any&limit=200&status=pending', { headers: { authorization: 'Bearer ' + token } })).json();
  const all = list.items.concat(pend.items);
  let conv = null;
  for (const c of all) {
    const m = await (await fetch(`${BASE()}/api/conversations/${c.id}/messages?after_seq=0&limit=1`, { headers: { authorization: 'Bearer ' + token } })).json();
    if (m.items[0] && m.items[0].body === first) { conv = c; break; }
  }
  assert.ok(conv, 'found the conversation');
  const expected = [first];
  for (let i = 1; i < 120; i++) {
    const body = `line ${String(i).padStart(3, '0')}`;
    expected.push(body);
    const r = await fetch(`${BASE()}/api/conversations/${conv.id}/messages`, {
      method: 'POST',
      headers: { authorization: 'Bearer ' + token, 'content-type': 'application/json' },
      body: JSON.stringify({ client_msg_id: 'hist-' + i, body, private: i % 10 === 0 }),
    });
    assert.equal(r.status, 201);
  }

  const item = agentConsole.conversation(agent, 'line 119');
  await item.waitFor();
  await item.locator('button').click();
  await waitUntil(async () => (await agentConsole.bodies(agent)).includes('line 119'), { what: 'newest page' });
  const firstPage = await agentConsole.bodies(agent);
  assert.ok(firstPage.length < expected.length, 'not everything at once');

  // Scroll to the top until the first message is there.
  await waitUntil(async () => {
    await agent.locator('#messages-scroll').evaluate((e) => { e.scrollTop = 0; e.dispatchEvent(new Event('scroll')); });
    return (await agentConsole.bodies(agent)).includes(first);
  }, { timeout: 30000, interval: 300, what: 'older pages to load on scroll' });
  assert.deepEqual(await agentConsole.bodies(agent), expected);
  const seqs = await agentConsole.seqs(agent);
  assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b));
  assert.equal(new Set(seqs).size, seqs.length);
  // Notes are marked as notes.
  assert.equal(await agent.locator('#messages li.note').count(), 11);

  // The widget never shows the notes.
  await visitor.reload();
  await waitUntil(async () => (await widget.bodies(visitor)).includes('line 119'), { what: 'widget history' });
  const seen = await widget.bodies(visitor);
  assert.equal(seen.length, 120 - 11);
  assert.ok(!seen.includes('line 010'), 'a private note reached the visitor');

  assertNoProblems(assert, visitor, agent);
  await visitorCtx.close();
  await agentCtx.close();
});
