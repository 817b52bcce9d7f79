// What both browser scripts share: the settings from tests/browser.rs, Chromium, screenshots.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

export const BASE_URL = process.env.BASE_URL ?? 'http://127.0.0.1:8080';
export const USERNAME = process.env.SAGE_USERNAME ?? 'admin';
export const PASSWORD = process.env.SAGE_PASSWORD ?? '';
const SCREENSHOT_DIR = process.env.SCREENSHOT_DIR ?? 'screenshots';
mkdirSync(SCREENSHOT_DIR, { recursive: true });

export async function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-dev-shm-usage'],
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
    console.error(`FAIL ${name}: ${error.stack ?? error}`);
    throw error;
  }
}

export async function api(method, path, body, token) {
  const headers = { 'Content-Type': 'application/json' };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(BASE_URL + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const answer = await response.json();
  check(response.ok, `${method} ${path}: ${response.status} ${JSON.stringify(answer)}`);
  return answer.data;
}
