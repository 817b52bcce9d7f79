// The API docs at /docs/ render the routes with nothing fetched from any other origin.
import { BASE_URL, check, launch, shot, step } from './lib.mjs';

const browser = await launch();
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const origin = new URL(BASE_URL).origin;
const foreign = [];
const errors = [];
await page.route('**/*', (route) => {
  const url = route.request().url();
  if (url.startsWith('data:') || new URL(url).origin === origin) return route.continue();
  foreign.push(url);
  return route.abort();
});
page.on('console', (message) => {
  if (message.type() === 'error') errors.push(message.text());
});
page.on('pageerror', (error) => errors.push(String(error)));

try {
  await step('the docs render every function\'s routes from /openapi.json', async () => {
    await page.goto(BASE_URL + '/docs');
    await page.waitForSelector('.opblock', { timeout: 30_000 });
    const text = await page.textContent('#swagger-ui');
    for (const path of ['/api/stream', '/api/conversations', '/api/mcp/add', '/api/health']) {
      check(text.includes(path), `${path} is listed`);
    }
    check(text.includes('Sage Functions'), 'the title is shown');
    await shot(page, 'docs');
    await page.locator('.opblock-summary-path', { hasText: '/api/stream' }).first().click();
    await page.waitForSelector('.opblock.is-open');
    await shot(page, 'docs-stream');
  });
  check(foreign.length === 0, `requests to other origins: ${foreign.join(', ')}`);
  check(errors.length === 0, `console errors: ${errors.join(' | ')}`);
} finally {
  await browser.close();
}
