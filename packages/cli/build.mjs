// Bundles the CLI into dist/: all of it in one CommonJS file (mybuild.bundle.cjs; each command's
// modules still run only when that command is used), started by dist/mybuild.cjs (loader.cjs),
// which compiles it with V8's code cache; dist/mybuild.mjs is the same for `import`. Copies the
// native addon beside it.
import { build } from 'esbuild';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
const result = await build({
  entryPoints: [join(here, 'src', 'bin.ts')],
  outfile: join(dist, 'mybuild.bundle.cjs'),
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  external: ['zstd-napi'],
  sourcemap: 'linked',
  // Whitespace and syntax only, names kept (stack traces, the source map): a third less to read
  // and to give V8 at every start (745 -> 519 KB; a cached build 77 -> 72 ms here).
  minifyWhitespace: true,
  minifySyntax: true,
  // import.meta.url (the addon's and zstd-napi's location) is the bundle's own URL
  define: { 'import.meta.url': '__mybuildUrl' },
  // 'use strict' first: esbuild puts its own after the banner, where it is no directive
  banner: { js: "'use strict';\nconst __mybuildUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
  metafile: true,
});
// A dynamic import() left in the bundle would fail under vm.Script (no module loader there).
for (const [file, out] of Object.entries(result.metafile.outputs)) {
  for (const imp of out.imports) {
    if (imp.kind === 'dynamic-import') throw new Error(`${file}: dynamic import of ${imp.path} left in the bundle: use a static import or require`);
  }
}
if (!readFileSync(join(dist, 'mybuild.bundle.cjs'), 'utf8').startsWith("'use strict';\n")) throw new Error('the bundle does not start in strict mode');
// The cache directory's trust rules, for the loader (which runs before the bundle) from the same source.
await build({
  entryPoints: [join(here, 'src', 'cachedir.ts')],
  outfile: join(dist, 'cachedir.cjs'),
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
});
copyFileSync(join(here, 'loader.cjs'), join(dist, 'mybuild.cjs'));
writeFileSync(join(dist, 'mybuild.mjs'), "#!/usr/bin/env node\nimport './mybuild.cjs';\n");
chmodSync(join(dist, 'mybuild.cjs'), 0o755);
chmodSync(join(dist, 'mybuild.mjs'), 0o755);
copyFileSync(join(here, '..', 'layer-store', 'build', 'sys.node'), join(dist, 'sys.node'));
