// The Reports page of the console shows the right numbers for a known scenario: two
// sites, two agents, nine conversations on 10–11 Nov 2026 with known response and
// resolution times and ratings (seeded in PostgreSQL), one more outside the range.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const { BASE, env, launch, watchedPage, waitUntil, agentConsole, assertNoProblems } = require('./lib/kefu');

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

function sql(statement) {
  execFileSync('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', env('DATABASE_URL'), '-c', statement]);
}

test('the report page shows per-day counts, response times, CSAT, per agent and per site', { timeout: 120000 }, async () => {
  const admin = await api('POST', '/api/auth/login', { email: env('KEFU_ADMIN_EMAIL'), password: env('KEFU_ADMIN_PASSWORD') });
  const tag = Date.now().toString(36);
  const a = await api('POST', '/api/sites', { name: 'Report Shop A ' + tag }, admin.token);
  const b = await api('POST', '/api/sites', { name: 'Report Shop B ' + tag }, admin.token);
  const alice = await api('POST', '/api/agents', { email: `ra-${tag}@example.com`, name: 'Rita ' + tag, password: 'report-password-1', role: 'agent', max_open: 10 }, admin.token);
  const bob = await api('POST', '/api/agents', { email: `rb-${tag}@example.com`, name: 'Ravi ' + tag, password: 'report-password-1', role: 'agent', max_open: 10 }, admin.token);
  // site, agent, created, first response after s, resolved after s, rating
  const rows = [
    [a.id, alice.id, '2026-11-10 10:00', 10, 100, 5],
    [a.id, alice.id, '2026-11-10 10:00', 20, 200, 4],
    [a.id, alice.id, '2026-11-10 10:00', 30, 300, null],
    [a.id, alice.id, '2026-11-10 10:00', 40, null, null],
    [a.id, alice.id, '2026-11-10 10:00', 50, null, null],
    [b.id, bob.id, '2026-11-11 09:00', 60, 600, 2],
    [b.id, bob.id, '2026-11-11 09:00', 120, 600, null],
    [b.id, bob.id, '2026-11-11 09:00', null, 900, null],
    [b.id, null, '2026-11-11 23:59', null, null, null],
    [a.id, alice.id, '2026-10-01 10:00', 1, 1, 1],
  ];
  rows.forEach(([site, agent, created, frt, rt, rating], i) => {
    const at = (s) => (s === null ? 'NULL' : `timestamptz '${created}+00' + interval '${s} seconds'`);
    const status = rt !== null ? 'resolved' : agent ? 'open' : 'pending';
    sql(`WITH v AS (INSERT INTO visitors (id, site_id, token_hash) VALUES (gen_random_uuid(), '${site}', sha256('report-${tag}-${i}'::bytea)) RETURNING id)
         , c AS (INSERT INTO conversations (id, site_id, visitor_id, assignee_id, status, created_at, updated_at, first_response_at, resolved_at, rating)
         SELECT gen_random_uuid(), '${site}', v.id, ${agent ? `'${agent}'` : 'NULL'}, '${status}', '${created}+00', '${created}+00', ${at(frt)}, ${at(rt)}, ${rating === null ? 'NULL' : rating} FROM v RETURNING id, rating)
         INSERT INTO csat_ratings (conversation_id, rating) SELECT id, rating FROM c WHERE rating IS NOT NULL`);
  });

  const ctx = await browser.newContext({ viewport: { width: 1440, height: 900 } });
  const page = await watchedPage(ctx);
  await agentConsole.login(page);
  await page.locator('#open-reports').click();
  await page.locator('#reports').waitFor();
  await page.locator('#rep-from').fill('2026-11-10');
  await page.locator('#rep-to').fill('2026-11-11');
  // Only the two scenario sites: pick each in turn below; first both via "All sites" would
  // include other tests' conversations of today, which lie outside this range anyway.
  await page.locator('#rep-run').click();
  await waitUntil(async () => /from=2026-11-10/.test((await page.locator('#reports').getAttribute('data-loaded')) || ''), { what: 'the report for 10–11 Nov' });

  const value = async (metric) => (await page.locator(`.rep-card[data-metric="${metric}"] .rep-value`).textContent()).trim();
  assert.equal(await value('conversations'), '9');
  assert.equal(await value('resolved'), '6');
  assert.equal(await value('first-response-median'), '40s');
  assert.equal(await value('first-response-p90'), '1m 24s');
  assert.equal(await value('resolution-median'), '7m 30s');
  assert.equal(await value('resolution-p90'), '12m 30s');
  assert.equal(await value('csat'), '3.67');

  // The chart: one bar per day, 5 and 4 high in that proportion.
  const bars = page.locator('#rep-chart rect.rep-bar');
  assert.equal(await bars.count(), 2);
  assert.equal(await bars.nth(0).getAttribute('data-day'), '2026-11-10');
  assert.equal(await bars.nth(0).getAttribute('data-count'), '5');
  assert.equal(await bars.nth(1).getAttribute('data-count'), '4');
  const h0 = Number(await bars.nth(0).getAttribute('height'));
  const h1 = Number(await bars.nth(1).getAttribute('height'));
  assert.ok(Math.abs(h1 / h0 - 0.8) < 0.01, `bar heights ${h0} ${h1}`);

  const cells = async (table, name) => page.locator(`#${table} tr[data-name="${name}"] td`).allTextContents();
  assert.deepEqual(await cells('rep-agents', 'Rita ' + tag), ['5', '3', '30s', '46s', '3m 20s', '4m 40s', '4.50']);
  assert.deepEqual(await cells('rep-agents', 'Ravi ' + tag), ['3', '3', '1m 30s', '1m 54s', '10m 0s', '14m 0s', '2.00']);
  assert.deepEqual(await cells('rep-agents', 'Unassigned'), ['1', '0', '—', '—', '—', '—', '—']);
  assert.deepEqual((await cells('rep-sites', a.name)).slice(0, 2), ['5', '3']);
  assert.deepEqual((await cells('rep-sites', b.name)).slice(0, 2), ['4', '3']);

  // One site only.
  await page.locator('#rep-site').selectOption({ label: b.name });
  await page.locator('#rep-run').click();
  await waitUntil(async () => ((await page.locator('#reports').getAttribute('data-loaded')) || '').endsWith(b.id), { what: 'the report of site B' });
  assert.equal(await value('conversations'), '4');
  assert.equal(await value('csat'), '2.00');

  // Export the resolved conversations of site B in that range as CSV: a file the browser saves.
  await page.locator('#rep-exp-status').selectOption('resolved');
  await page.locator('#rep-exp-format').selectOption('csv');
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.locator('#rep-export-conversations').click(),
  ]);
  assert.equal(download.suggestedFilename(), 'kefu-conversations.csv');
  const csv = require('node:fs').readFileSync(await download.path(), 'utf8').trim().split('\n');
  assert.match(csv[0], /^id,/);
  assert.equal(csv.length, 1 + 3, csv.join('\n'));
  assert.ok(csv.slice(1).every((l) => l.includes(b.id) && l.includes('resolved')), csv.join('\n'));
  await page.screenshot({ path: `${env('KEFU_ARTIFACTS_DIR')}/browser/reports.png`, fullPage: true });
  await assertNoProblems(page);
  await ctx.close();
});
