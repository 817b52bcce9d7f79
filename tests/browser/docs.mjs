// The API docs at /docs/ render the server's routes from /openapi.json with nothing fetched from
// any other origin: every such request is aborted and fails the script. Settings: see lib.mjs.
import { BASE_URL, check, launch, main, shot, step } from './lib.mjs';

await main(async () => {
  const browser = await launch();
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const origin = new URL(BASE_URL).origin;
  const foreign = [];
  const errors = [];
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('data:') || url.startsWith('blob:') || new URL(url).origin === origin) return route.continue();
    foreign.push(url);
    return route.abort();
  });
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  page.on('pageerror', (error) => errors.push(String(error)));

  try {
    await step('the docs render the routes from /openapi.json', async () => {
      const answer = await page.goto(BASE_URL + '/docs/');
      check(answer && answer.ok(), `GET /docs/: HTTP ${answer?.status()}`);
      await page.waitForSelector('.opblock', { timeout: 30_000 });
      const paths = await page.$$eval('.opblock-summary-path', (all) =>
        all.map((element) => (element.getAttribute('data-path') || element.textContent).replace(/\u200b/g, '').trim()),
      );
      for (const path of ['/api/stream', '/api/conversations', '/api/stream/resume/{session_id}']) {
        check(paths.includes(path), `${path} is shown as an operation; shown: ${paths.join(', ')}`);
      }
      const title = await page.textContent('.info .title');
      check(title && title.trim().length > 0, 'the API title is shown');
      await shot(page, 'docs');
      await page.locator('.opblock-summary-path', { hasText: '/api/stream' }).first().click();
      await page.waitForSelector('.opblock.is-open', { timeout: 10_000 });
      await shot(page, 'docs-stream');
      console.log(`     ${paths.length} operations, title "${title.trim()}"`);
    });
    check(foreign.length === 0, `requests to other origins were attempted: ${foreign.join(', ')}`);
    check(errors.length === 0, `console errors: ${errors.join(' | ')}`);
  } finally {
    await browser.close();
  }
});
