import { writeFileSync } from 'node:fs';
import { defineConfig } from 'vite';

// The crate serves index.html at `/` and everything under `static/` at `/static/*`.
// A relative base keeps the page working behind a reverse proxy sub-path.
export default defineConfig({
  base: './',
  build: {
    outDir: 'dist',
    assetsDir: 'static',
    emptyOutDir: true,
    target: 'es2022',
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
});
