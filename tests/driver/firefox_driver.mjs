// Drives Debian's firefox-esr over WebDriver BiDi (puppeteer-core, which never downloads a
// browser) for the Python tests: tests/firefox.py starts it and speaks JSON lines with it.
//
// Each request on stdin is one line {"id": n, "op": "...", ...}; each reply on stdout is one
// line {"id": n, "ok": true, "value": ...} or {"id": n, "ok": false, "error": "..."}.
// Firefox starts with the first line read and closes when stdin ends.

import { createInterface } from 'node:readline';
import puppeteer from 'puppeteer-core';

const executablePath = process.env.INVIGIL_FIREFOX || '/usr/bin/firefox-esr';

// Fake devices without prompts, WebRTC on the loopback (where the test server is), autoplay.
const PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'intl.accept_languages': process.env.INVIGIL_FIREFOX_LOCALE || 'en-GB',
  'browser.shell.checkDefaultBrowser': false,
  'datareporting.policy.dataSubmissionEnabled': false,
  'toolkit.telemetry.reportingpolicy.firstRun': false,
};

let browser = null;
const pages = new Map();
const contexts = new Map();
let nextPage = 1;

async function launch() {
  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath,
    headless: true,
    protocol: 'webDriverBiDi',
    extraPrefsFirefox: PREFS,
    args: ['--no-remote'],
  });
  return { version: await browser.version() };
}

function page(request) {
  const found = pages.get(request.page);
  if (!found) throw new Error(`no page ${request.page}`);
  return found;
}

async function newPage(request) {
  const context = await browser.createBrowserContext();
  const created = await context.newPage();
  const id = nextPage++;
  const errors = [];
  created.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console.error: ${message.text()}`);
  });
  created.on('pageerror', (error) => errors.push(`uncaught: ${error.message || error}`));
  created.__errors = errors;
  if (request.viewport) await created.setViewport(request.viewport);
  if (request.initScript) await created.evaluateOnNewDocument(request.initScript);
  pages.set(id, created);
  contexts.set(id, context);
  return id;
}

const OPS = {
  launch,
  newPage,
  async goto(request) {
    const response = await page(request).goto(request.url, { waitUntil: 'load', timeout: request.timeout || 30000 });
    return response ? response.status() : null;
  },
  async eval(request) {
    return await page(request).evaluate(request.expression);
  },
  async click(request) {
    const handle = await page(request).waitForSelector(request.selector, { visible: true, timeout: request.timeout || 15000 });
    await handle.click();
    await handle.dispose();
    return null;
  },
  async fill(request) {
    const target = page(request);
    await target.waitForSelector(request.selector, { visible: true, timeout: request.timeout || 15000 });
    await target.$eval(request.selector, (element) => { element.value = ''; });
    await target.type(request.selector, request.value);
    return null;
  },
  async wait(request) {
    const options = { timeout: request.timeout || 15000 };
    if (request.state === 'visible') options.visible = true;
    if (request.state === 'hidden') options.hidden = true;
    await page(request).waitForSelector(request.selector, options);
    return null;
  },
  async errors(request) {
    return page(request).__errors.slice();
  },
  async closePage(request) {
    const context = contexts.get(request.page);
    pages.delete(request.page);
    contexts.delete(request.page);
    if (context) await context.close();
    return null;
  },
};

function reply(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const lines = createInterface({ input: process.stdin });
const pending = new Set();
let launched = null;
lines.on('line', (line) => {
  let request;
  try {
    request = JSON.parse(line);
  } catch (error) {
    reply({ id: null, ok: false, error: `not JSON: ${error.message}` });
    return;
  }
  // Requests run concurrently (one page may wait while another acts); replies carry the id.
  const work = (async () => {
    const op = OPS[request.op];
    if (!op) return reply({ id: request.id, ok: false, error: `unknown op ${request.op}` });
    try {
      launched = launched || launch();
      const version = await launched;
      const value = request.op === 'launch' ? version : await op(request);
      reply({ id: request.id, ok: true, value: value ?? null });
    } catch (error) {
      reply({ id: request.id, ok: false, error: String(error && error.message ? error.message : error) });
    }
  })();
  pending.add(work);
  work.finally(() => pending.delete(work));
});
lines.on('close', async () => {
  await Promise.allSettled([...pending]);
  if (browser) await browser.close().catch(() => {});
  process.exit(0);
});
