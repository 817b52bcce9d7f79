// The page's weight and its time to interactive (BENCHMARKS.md): run by local/bench_page.sh
// against a running sage-local. Interactive = signed in, agents and conversations loaded
// (`performance.mark('sage-ready')` in the page), measured from navigation start.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { BASE_URL, PASSWORD, USERNAME, api, launch } from './lib.mjs';

const DIST = process.env.SAGE_WEB_DIST ?? new URL('../../local/web/dist', import.meta.url).pathname;
const RUNS = Number(process.env.RUNS ?? 15);

function weight() {
  const files = [
    join(DIST, 'index.html'),
    ...readdirSync(join(DIST, 'assets')).map((name) => join(DIST, 'assets', name)),
  ];
  let raw = 0;
  let gzip = 0;
  for (const file of files) {
    const bytes = readFileSync(file);
    raw += bytes.length;
    gzip += gzipSync(bytes).length;
  }
  return { files: files.length, raw, gzip };
}

const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];

const { access_token: token } = await api('POST', '/api/user/login', { username: USERNAME, password: PASSWORD });
const browser = await launch();
const times = [];
try {
  for (let i = 0; i < RUNS; i += 1) {
    const context = await browser.newContext();
    await context.addInitScript((value) => localStorage.setItem('sage.token', value), token);
    const page = await context.newPage();
    await page.goto(BASE_URL + '/');
    await page.waitForSelector('body[data-ready="true"]');
    times.push(await page.evaluate(() => performance.getEntriesByName('sage-ready')[0].startTime));
    await context.close();
  }
} finally {
  await browser.close();
}
const size = weight();
console.log(
  JSON.stringify({
    page_files: size.files,
    page_bytes: size.raw,
    page_gzip_bytes: size.gzip,
    interactive_ms_min: Math.round(Math.min(...times)),
    interactive_ms_median: Math.round(median(times)),
    interactive_ms_max: Math.round(Math.max(...times)),
    runs: RUNS,
  }),
);
