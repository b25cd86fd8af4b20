// The Webhooks page: an admin adds a webhook for the demo site in the console, a visitor
// writes, the receiver (a local HTTP server) refuses the first delivery with a 500 and
// takes the retry; the delivery log in the console shows it delivered on the 2nd attempt.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const http = require('node:http');
const crypto = require('node:crypto');
const { BASE, launch, watchedPage, waitUntil, widget, agentConsole, assertNoProblems } = require('./lib/kefu');

let browser;
before(async () => { browser = await launch(); });
after(async () => { await browser?.close(); });

test('an admin adds a webhook and sees its deliveries, retried after a 500', { timeout: 120000 }, async () => {
  const hits = [];
  const receiver = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      const status = hits.length === 0 ? 500 : 200;
      hits.push({ headers: req.headers, body, status });
      res.writeHead(status).end();
    });
  });
  await new Promise((ok) => receiver.listen(0, '127.0.0.1', ok));
  const url = `http://127.0.0.1:${receiver.address().port}/hook`;
  try {
    const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    const page = await watchedPage(ctx);
    await agentConsole.login(page);
    await page.locator('#open-webhooks').click();
    await page.locator('#webhooks').waitFor();
    await page.locator('#wh-url').fill(url);
    // Conversation events only.
    await page.locator('.wh-event input[value="message.created"]').uncheck();
    await page.locator('#wh-add').click();
    const row = page.locator('#wh-list tr[data-webhook]', { hasText: url });
    await row.waitFor();
    const secret = (await row.locator('.wh-secret').textContent()).trim();
    assert.match(secret, /^whsec_[0-9a-f]{64}$/);

    // A visitor starts a conversation on the demo page.
    const visitorCtx = await browser.newContext();
    const visitor = await watchedPage(visitorCtx);
    await visitor.goto(BASE() + '/');
    await widget.open(visitor);
    await widget.send(visitor, 'hello webhooks ' + Date.now());

    // First attempt refused, the retry (KEFU_WEBHOOK_RETRY_SECS later) accepted.
    // Deliveries go out concurrently (the conversation is created and assigned at once), so
    // the refused request may be either conversation event: follow that one.
    const retriedOk = () => hits.find((h) => h.status === 200 && h.body === hits[0].body);
    await waitUntil(async () => retriedOk() !== undefined, { what: 'the retried delivery', timeout: 60000 });
    const ok = retriedOk();
    const event = JSON.parse(ok.body);
    assert.ok(['conversation.created', 'conversation.updated'].includes(event.type), event.type);
    assert.equal(hits[0].body, ok.body, 'the retry carries the same body');
    const expected = 'sha256=' + crypto.createHmac('sha256', secret).update(`${ok.headers['x-kefu-timestamp']}.${ok.body}`).digest('hex');
    assert.equal(ok.headers['x-kefu-signature'], expected);

    await row.locator('.wh-show-log').click();
    await waitUntil(async () => {
      await row.locator('.wh-show-log').click();
      return (await page.locator('#wh-log tr[data-status="delivered"]', { hasText: event.type }).count()) > 0;
    }, { what: 'the delivery log shows it delivered' });
    const rows = page.locator('#wh-log tr[data-status="delivered"]');
    const all = [];
    for (let i = 0; i < await rows.count(); i++) all.push((await rows.nth(i).locator('td').allTextContents()).slice(0, 4));
    assert.deepEqual(all.filter((c) => c[2] === '2'), [[event.type, 'delivered', '2', '200']], JSON.stringify(all));
    await assertNoProblems(page);
    await ctx.close();
    await visitorCtx.close();
  } finally {
    receiver.close();
  }
});
