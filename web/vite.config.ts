import { writeFileSync } from 'node:fs';
import { defineConfig } from 'vite';

// The hub embeds dist/ (rust-embed): hashed files under /assets/ are cached for a year,
// index.html is never cached. `npm run dev` proxies the API to a hub on 127.0.0.1:7070.
export default defineConfig({
  build: {
    outDir: 'dist',
    assetsDir: 'assets',
    emptyOutDir: true,
    target: 'es2022',
  },
  server: {
    proxy: {
      '/api': { target: 'http://127.0.0.1:7070', ws: true },
      '/ws': { target: 'ws://127.0.0.1:7070', ws: true },
    },
  },
  test: {
    include: ['src/**/*.test.ts'],
    environment: 'node',
  },
  plugins: [
    {
      // emptyOutDir removes the committed dist/.gitignore; put it back.
      name: 'keep-dist-gitignore',
      closeBundle() {
        writeFileSync('dist/.gitignore', '*\n!.gitignore\n');
      },
    },
  ],
} as never);
