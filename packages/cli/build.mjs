// Bundles the CLI into dist/ (one entry, lazily loaded chunks per command) so that
// `mybuild version` does not pay for loading every module; copies the native addon beside it.
import { build } from 'esbuild';
import { chmodSync, copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
await build({
  entryPoints: { mybuild: join(here, 'src', 'bin.ts') },
  outdir: dist,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outExtension: { '.js': '.mjs' },
  chunkNames: 'chunks/[name]-[hash]',
  external: ['zstd-napi'],
  sourcemap: 'linked',
  banner: {
    js: "#!/usr/bin/env node\nimport { createRequire as __mybuildCreateRequire } from 'node:module';\nconst require = __mybuildCreateRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
chmodSync(join(dist, 'mybuild.mjs'), 0o755);
copyFileSync(join(here, '..', 'layer-store', 'build', 'sys.node'), join(dist, 'sys.node'));
copyFileSync(join(here, '..', 'layer-store', 'build', 'sys.node'), join(dist, 'chunks', 'sys.node'));
