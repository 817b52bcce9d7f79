// What the browser scripts share: settings from the environment, Chromium, screenshots, checks.
//   BASE_URL        the server (page and API on one origin), e.g. http://127.0.0.1:18080
//   SAGE_USERNAME   an account to sign in with (default admin)
//   SAGE_PASSWORD   its password
//   SCREENSHOT_DIR  where each step's PNG goes (default ./screenshots)
//   CHROMIUM        the browser (default /usr/bin/chromium, Debian's package)
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const BASE_URL = (process.env.BASE_URL ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const USERNAME = process.env.SAGE_USERNAME ?? 'admin';
export const PASSWORD = process.env.SAGE_PASSWORD ?? '';
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR ?? 'screenshots';
mkdirSync(SCREENSHOT_DIR, { recursive: true });

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--disable-gpu'],
  });
}

let shots = 0;
export async function shot(page, name) {
  shots += 1;
  await page.screenshot({ path: join(SCREENSHOT_DIR, `${String(shots).padStart(2, '0')}-${name}.png`), fullPage: true });
}

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

export async function step(name, action) {
  const started = Date.now();
  try {
    await action();
    console.log(`ok   ${name} (${Date.now() - started} ms)`);
  } catch (error) {
    console.error(`FAIL ${name}: ${error?.stack ?? error}`);
    throw error;
  }
}

/** Runs the script's body; any failure exits non-zero with its message. */
export async function main(body) {
  try {
    await body();
  } catch (error) {
    console.error(`\n${process.argv[1]} failed: ${error?.message ?? error}`);
    process.exit(1);
  }
}

/** A JSON call to the API; resolves to the envelope's `data`, throws with the answer otherwise. */
export async function api(method, path, body, token) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(BASE_URL + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let answer;
  try {
    answer = JSON.parse(text);
  } catch {
    answer = text;
  }
  check(response.ok, `${method} ${path}: HTTP ${response.status} ${text.slice(0, 500)}`);
  return answer?.data;
}

/** A token for the API calls the scripts make beside the page; null when auth is off. */
export async function signIn() {
  const info = await api('GET', '/api/system/info').catch(() => null);
  if (info && info.auth_required === false) return null;
  const pair = await api('POST', '/api/user/login', { username_or_email: USERNAME, password: PASSWORD });
  return pair.access_token;
}
