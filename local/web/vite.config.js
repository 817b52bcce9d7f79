import { defineConfig } from 'vite';

// `npm run dev` / `npm run preview` forward the API to a running sage-local (SAGE_API, default
// http://127.0.0.1:8080); in production sage-local serves dist/ itself, on the API's origin.
const api = process.env.SAGE_API ?? 'http://127.0.0.1:8080';
const proxy = {
  '/api': { target: api, changeOrigin: true },
  '/openapi.json': { target: api, changeOrigin: true },
};

export default defineConfig({
  base: '/',
  build: {
    // tests/run.sh builds into target/ to compare with the committed dist/.
    outDir: process.env.SAGE_WEB_OUT ?? 'dist',
    emptyOutDir: true,
    target: 'es2022',
    modulePreload: { polyfill: false },
    reportCompressedSize: true,
    sourcemap: false,
  },
  server: { proxy },
  preview: { proxy },
});
