import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    // tests/run.sh builds into target/ to compare with the committed dist/.
    outDir: process.env.SAGE_WEB_OUT ?? 'dist',
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
    sourcemap: false,
  },
  server: {
    proxy: { '/api': 'http://127.0.0.1:8080', '/openapi.json': 'http://127.0.0.1:8080' },
  },
});
