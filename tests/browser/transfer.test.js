// Claim and transfer between two agents: the new assignee sees the conversation in "Mine"
// live, the old one no longer does, and the visitor sees who is answering now.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { BASE, env, launch, watchedPage, waitUntil, widget, agentConsole, assertNoProblems } = require('./lib/kefu');

let browser;
before(async () => { browser = await launch(); });
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

test('a conversation transferred to another agent moves between their inboxes live', { timeout: 120000 }, async () => {
  const admin = await api('POST', '/api/auth/login', { email: env('KEFU_ADMIN_EMAIL'), password: env('KEFU_ADMIN_PASSWORD') });
  const bob = { email: 'bob@example.com', password: 'bob-password-123' };
  await api('POST', '/api/agents', { email: bob.email, name: 'Bob Lee', password: bob.password, role: 'agent', max_open: 5 }, admin.token);

  const aliceCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const alice = await watchedPage(aliceCtx);
  await agentConsole.login(alice);
  await agentConsole.goOnline(alice);

  const bobCtx = await browser.newContext({ viewport: { width: 1440, height: 860 } });
  const bobPage = await watchedPage(bobCtx);
  await agentConsole.login(bobPage, bob);

  const visitorCtx = await browser.newContext();
  const visitor = await watchedPage(visitorCtx);
  await visitor.goto(BASE() + '/');
  await widget.open(visitor);
  const text = 'transfer me please ' + Date.now();
  await widget.send(visitor, text);

  // Alice (online) gets it; Bob's "Mine" stays empty of it.
  const aliceItem = agentConsole.conversation(alice, text);
  await aliceItem.waitFor();
  await aliceItem.locator('button').click();
  await waitUntil(async () => (await alice.locator('#act-transfer option').count()) > 1, { what: 'transfer choices' });
  assert.equal(await agentConsole.conversation(bobPage, text).count(), 0);

  await alice.locator('#act-transfer').selectOption({ label: 'Bob Lee (offline)' });
  await waitUntil(async () => /Assigned to Bob Lee/.test(await alice.locator('#thread-sub').textContent()), { what: 'assigned to Bob in Alice console' });
  // Live, without reloading: in Bob's Mine, out of Alice's Mine.
  await agentConsole.conversation(bobPage, text).waitFor();
  await waitUntil(async () => (await agentConsole.conversation(alice, text).count()) === 0, { what: "gone from Alice's Mine" });
  await waitUntil(async () => (await widget.headerName(visitor)) === 'Bob Lee', { what: 'the visitor sees Bob' });

  // Alice takes it back with a claim.
  await alice.locator('[data-view="any"]').click();
  await agentConsole.conversation(alice, text).locator('button').click();
  await alice.locator('#act-claim').click();
  await waitUntil(async () => (await widget.headerName(visitor)) === 'Alice Chen', { what: 'the visitor sees Alice again' });
  await waitUntil(async () => (await agentConsole.conversation(bobPage, text).count()) === 0, { what: "gone from Bob's Mine" });
  await alice.locator('#act-resolve').click();

  assertNoProblems(assert, alice, bobPage, visitor);
  await Promise.all([aliceCtx.close(), bobCtx.close(), visitorCtx.close()]);
});
