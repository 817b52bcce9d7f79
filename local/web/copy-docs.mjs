// The API docs page: Swagger UI from the swagger-ui-dist package (no CDN), written to dist/docs/,
// which the server serves at /docs/. Its files are referenced relatively, so they load from
// /docs/ (the server redirects /docs to /docs/); the page renders the server's /openapi.json.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const source = dirname(require.resolve('swagger-ui-dist/package.json'));
const target = join(process.env.SAGE_WEB_OUT ?? 'dist', 'docs');
mkdirSync(target, { recursive: true });
for (const file of ['swagger-ui.css', 'swagger-ui-bundle.js']) {
  // Without the source map comment: the map is not shipped.
  const text = readFileSync(join(source, file), 'utf8').replace(/\n?\/[/*]# sourceMappingURL=[^\n]*\s*$/, '\n');
  writeFileSync(join(target, file), text);
}
writeFileSync(
  join(target, 'index.html'),
  `<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <title>Sage API</title>
    <link rel="icon" href="data:," />
    <link rel="stylesheet" href="./swagger-ui.css" />
    <style>body { margin: 0; }</style>
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="./swagger-ui-bundle.js"></script>
    <script src="./init.js"></script>
  </body>
</html>
`,
);
writeFileSync(
  join(target, 'init.js'),
  `window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  validatorUrl: null,
  persistAuthorization: true,
  tryItOutEnabled: false,
});
`,
);
