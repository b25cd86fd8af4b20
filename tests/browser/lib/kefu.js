// Shared pieces of kefu's browser tests: the server under test, Debian's chromium, and
// small waiting helpers. scripts/test.d/20-browser.sh starts the server and sets:
//   KEFU_URL            http://127.0.0.1:PORT of the running kefu
//   KEFU_SITE_KEY       widget key of the site the demo page (/) embeds
//   KEFU_ADMIN_EMAIL    KEFU_ADMIN_PASSWORD   the agent who signs in to the console
//   KEFU_BIN, KEFU_PID_FILE, KEFU_LOG_FILE   to stop and start the server mid-test
//   KEFU_ARTIFACTS_DIR  where screenshots go
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { chromium } = require('playwright-core');

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through scripts/test.d/20-browser.sh`);
  return v;
}

const BASE = () => env('KEFU_URL');
const ARTIFACTS = path.join(process.env.KEFU_ARTIFACTS_DIR || path.resolve(__dirname, '../../../artifacts'), 'browser');

/** Debian's chromium, never a downloaded browser. */
async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM_PATH || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/**
 * A page that records what must never happen: dialogs (alert() from injected markup),
 * uncaught errors and Content-Security-Policy violations.
 */
async function watchedPage(context) {
  const page = await context.newPage();
  page.problems = { dialogs: [], errors: [], csp: [] };
  page.on('dialog', (d) => {
    page.problems.dialogs.push(d.message());
    d.dismiss().catch(() => {});
  });
  page.on('pageerror', (e) => page.problems.errors.push(String(e)));
  page.on('console', (msg) => {
    const text = msg.text();
    if (/Content Security Policy/i.test(text)) page.problems.csp.push(text);
  });
  return page;
}

async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, name + '.png');
  await page.screenshot({ path: file });
  return file;
}

/** Polls fn until it returns a truthy value; the last error or value explains a timeout. */
async function waitUntil(fn, { timeout = 15000, interval = 100, what = 'condition' } = {}) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, interval));
  }
}

// ---- the widget (inside its shadow root; Playwright's CSS locators pierce it) ----------

const widget = {
  launcher: (page) => page.locator('[data-kefu-widget] .launcher'),
  panel: (page) => page.locator('[data-kefu-widget] .panel'),
  input: (page) => page.locator('[data-kefu-widget] textarea'),
  /** Bodies of the confirmed messages, in order. */
  bodies: (page) => page.locator('[data-kefu-widget] ol.log li[data-seq] .bubble').allTextContents(),
  seqs: (page) => page.locator('[data-kefu-widget] ol.log li[data-seq]').evaluateAll((els) => els.map((e) => Number(e.dataset.seq))),
  pending: (page) => page.locator('[data-kefu-widget] ol.log-pending li').count(),
  typing: (page) => page.locator('[data-kefu-widget] .typing').textContent(),
  headerName: (page) => page.locator('[data-kefu-widget] .head .name').textContent(),
  async open(page) {
    await widget.launcher(page).click();
    await widget.panel(page).waitFor({ state: 'visible' });
  },
  async send(page, text) {
    await widget.input(page).fill(text);
    await widget.input(page).press('Enter');
  },
};

// ---- the console --------------------------------------------------------------------------

const agentConsole = {
  /** Signs in through the login form; the bootstrap admin unless `who` says otherwise. */
  async login(page, who) {
    await page.goto(BASE() + '/console');
    await page.locator('#login-email').fill(who ? who.email : env('KEFU_ADMIN_EMAIL'));
    await page.locator('#login-password').fill(who ? who.password : env('KEFU_ADMIN_PASSWORD'));
    await page.locator('#login-form button[type=submit]').click();
    await page.locator('#app').waitFor({ state: 'visible' });
    await page.locator('#conn[data-state="live"]').waitFor();
  },
  async goOnline(page) {
    await page.locator('#presence').selectOption('online');
    await waitUntil(async () => (await page.locator('#presence-dot').getAttribute('data-status')) === 'online', { what: 'status online' });
  },
  /** The inbox entry whose preview or name shows `text`. */
  conversation: (page, text) => page.locator('#conversations li.conv', { hasText: text }),
  bodies: (page) => page.locator('#messages li[data-seq] .bubble').allTextContents(),
  seqs: (page) => page.locator('#messages li[data-seq]').evaluateAll((els) => els.map((e) => Number(e.dataset.seq))),
  async reply(page, text) {
    await page.locator('#reply-text').fill(text);
    await page.locator('#reply-text').press('Enter');
  },
};

// ---- the server under test ----------------------------------------------------------------

function serverPid() {
  return Number(fs.readFileSync(env('KEFU_PID_FILE'), 'utf8').trim());
}

function alive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (_) {
    return false;
  }
}

/** SIGTERM (graceful: sockets close with 1001) and wait for the process to exit. */
async function stopServer() {
  const pid = serverPid();
  process.kill(pid, 'SIGTERM');
  await waitUntil(() => !alive(pid), { timeout: 30000, what: `kefu (pid ${pid}) to exit` });
}

/** Starts the server again with the same environment; waits for /healthz. */
async function startServer() {
  const log = fs.openSync(env('KEFU_LOG_FILE'), 'a');
  const child = spawn(env('KEFU_BIN'), ['serve'], { env: process.env, detached: true, stdio: ['ignore', log, log] });
  child.unref();
  fs.writeFileSync(env('KEFU_PID_FILE'), String(child.pid));
  await waitUntil(async () => {
    const r = await fetch(BASE() + '/healthz');
    return r.ok;
  }, { timeout: 60000, interval: 250, what: 'kefu to answer /healthz after a restart' });
}

function assertNoProblems(assert, ...pages) {
  for (const p of pages) {
    assert.deepEqual(p.problems.dialogs, [], 'a dialog opened: injected markup ran');
    assert.deepEqual(p.problems.errors, [], 'uncaught errors in the page');
    assert.deepEqual(p.problems.csp, [], 'Content-Security-Policy violations');
  }
}

module.exports = {
  BASE, env, launch, watchedPage, screenshot, waitUntil, widget, agentConsole,
  stopServer, startServer, assertNoProblems, ARTIFACTS,
};
