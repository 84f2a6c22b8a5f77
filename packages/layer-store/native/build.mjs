// Compiles sys.c into build/sys.node with the C compiler and Node's own headers.
// Skips the work when the output is newer than the source.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'sys.c');
const out = resolve(here, '..', 'build', 'sys.node');
if (existsSync(out) && statSync(out).mtimeMs > statSync(src).mtimeMs) process.exit(0);

const candidates = [
  process.env.npm_config_nodedir && join(process.env.npm_config_nodedir, 'include', 'node'),
  resolve(dirname(process.execPath), '..', 'include', 'node'),
  '/usr/include/node',
  '/usr/local/include/node',
].filter(Boolean);
const include = candidates.find((d) => existsSync(join(d, 'node_api.h')));
if (!include) {
  console.error(`layer-store: cannot find node_api.h (looked in ${candidates.join(', ')}); install Node's headers`);
  process.exit(1);
}
mkdirSync(dirname(out), { recursive: true });
const cc = process.env.CC || 'cc';
execFileSync(
  cc,
  ['-O2', '-Wall', '-Wextra', '-Wno-unused-parameter', '-fPIC', '-shared', '-DNODE_GYP_MODULE_NAME=sys', '-DNAPI_VERSION=8', `-I${include}`, '-o', `${out}.tmp`, src],
  { stdio: 'inherit' },
);
execFileSync('mv', ['-f', `${out}.tmp`, out]);
