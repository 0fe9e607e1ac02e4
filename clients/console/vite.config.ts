import { defineConfig } from "vite";

// Served by im-api under /console/ (same origin as the HTTP API); hashed file names, no inline
// scripts (the Content-Security-Policy forbids them). Two entries: the demo host page, and the
// components alone (`components-<hash>.js`, its exports kept) for a help desk's own pages; the
// manifest (.vite/manifest.json) maps `src/index.ts` to that file's hashed name.
export default defineConfig({
  base: "/console/",
  build: {
    outDir: "dist",
    emptyOutDir: true,
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    target: "es2022",
    sourcemap: false,
    manifest: true,
    rollupOptions: {
      input: { demo: "index.html", components: "src/index.ts" },
      preserveEntrySignatures: "exports-only",
    },
  },
});
