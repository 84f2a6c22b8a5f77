/**
 * dist/mybuild.cjs, the executable: runs the bundle with V8's code cache kept per user and
 * command in $XDG_CACHE_HOME/mybuild/code; a cache that is bad, or in a directory others may
 * write, is never trusted.
 */
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { cli } from './helpers.js';

let home: string;
let root: string;
beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), 'mybuild-loader-'));
  root = join(home, 'store');
});
afterEach(() => rmSync(home, { recursive: true, force: true }));

const codeDir = () => join(home, 'cache', 'mybuild', 'code');
const files = () => readdirSync(codeDir()).sort();

describe('code cache', () => {
  it('is written per command after a first run (0600 in a 0700 directory), then used and not rewritten', async () => {
    const env = { XDG_CACHE_HOME: join(home, 'cache') };
    const first = await cli(root, ['version'], { env });
    expect(first.code).toBe(0);
    expect(files()).toEqual([expect.stringMatching(/^\d+(-\d+){4}-v\d+\.\d+\.\d+-[a-z0-9]+-version\.v8$/)]);
    const file = join(codeDir(), files()[0]!);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(codeDir()).mode & 0o777).toBe(0o700);
    const written = statSync(file).mtimeMs;

    const second = await cli(root, ['version'], { env });
    expect(second.stdout).toBe(first.stdout);
    expect(statSync(file).mtimeMs).toBe(written); // accepted: a short run keeps it as it is

    const images = await cli(root, ['images'], { env });
    expect(images.code).toBe(0);
    expect(files()).toHaveLength(2);
    expect(files().some((f) => f.endsWith('-images.v8'))).toBe(true);
  });

  it('keeps the newest 48 files when it writes one (every rebuilt bundle starts new ones)', async () => {
    mkdirSync(codeDir(), { recursive: true, mode: 0o700 });
    chmodSync(join(home, 'cache', 'mybuild'), 0o700);
    for (let i = 0; i < 60; i++) {
      const f = join(codeDir(), `1-2-3-v0.0.0-x64-old${i}.v8`);
      writeFileSync(f, 'stale');
      utimesSync(f, 1_000_000 + i, 1_000_000 + i);
    }
    expect((await cli(root, ['version'], { env: { XDG_CACHE_HOME: join(home, 'cache') } })).code).toBe(0);
    const left = files();
    expect(left).toHaveLength(48);
    expect(left.some((f) => f.endsWith('-version.v8'))).toBe(true);
    expect(left).not.toContain('1-2-3-v0.0.0-x64-old0.v8'); // the oldest went first
    expect(left).toContain('1-2-3-v0.0.0-x64-old59.v8');
  });

  it('does not read a cache file that is a symlink, or that others may write', async () => {
    const env = { XDG_CACHE_HOME: join(home, 'cache') };
    await cli(root, ['version'], { env });
    const name = files()[0]!;
    const file = join(codeDir(), name);
    const real = join(home, 'elsewhere.v8');
    renameSync(file, real);
    writeFileSync(real, 'not what the link points to');
    symlinkSync(real, file);
    await cli(root, ['version'], { env });
    // not read through the link; the new cache replaced the link, not the file it named
    expect(readFileSync(real, 'utf8')).toBe('not what the link points to');
    expect(lstatSync(file).isFile()).toBe(true);
    expect(readdirSync(codeDir()).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    chmodSync(file, 0o666);
    const before = statSync(file).mtimeMs;
    await cli(root, ['version'], { env });
    expect(statSync(file).mtimeMs).toBeGreaterThan(before); // refused, so made again
    expect(statSync(file).mode & 0o777).toBe(0o600);
  });

  it('a corrupt cache file is refused by V8 and made again; the command is unaffected', async () => {
    const env = { XDG_CACHE_HOME: join(home, 'cache') };
    const good = await cli(root, ['version'], { env });
    const file = join(codeDir(), files()[0]!);
    const size = statSync(file).size;
    writeFileSync(file, Buffer.alloc(size, 0xa5));
    const again = await cli(root, ['version'], { env });
    expect(again).toEqual(good);
    const now = readFileSync(file);
    expect(now.length).toBeGreaterThan(10_000);
    expect(now.subarray(0, 64).equals(Buffer.alloc(64, 0xa5))).toBe(false); // made again from real code
  });

  it('is made again after a run at least three times as long as the one that made it, not after every long run; a failed run counts as short', async () => {
    const env = { XDG_CACHE_HOME: join(home, 'cache') };
    // a "registry" that lists the tags of x (or answers 404), after `delay` ms: `mybuild tags` quick or slow
    let delay = 0;
    let found = false;
    const server = createServer((req, res) => {
      setTimeout(() => {
        const ok = req.url === '/v2/' || (found && req.url === '/v2/x/tags/list');
        res.writeHead(ok ? 200 : 404, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
        res.end(!ok ? '{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}' : req.url === '/v2/' ? '{}' : '{"name":"x","tags":["1"]}');
      }, delay);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const repo = `127.0.0.1:${(server.address() as AddressInfo).port}/x`;
    const made = () => {
      const file = join(codeDir(), files().find((f) => f.endsWith('-tags.v8'))!);
      const bytes = readFileSync(file);
      return { magic: bytes.toString('latin1', 0, 4), inMs: bytes.readUInt32LE(4), mtimeMs: statSync(file).mtimeMs };
    };
    try {
      expect((await cli(root, ['tags', repo], { env })).code).not.toBe(0);
      const failed = made();
      expect(failed).toMatchObject({ magic: 'MBC1', inMs: 0 }); // made (there was none), as by a short run
      found = true;
      delay = 1500;
      const listed = await cli(root, ['tags', repo], { env });
      expect(listed.stdout).toBe('1\n');
      const long = made();
      expect(long.inMs).toBeGreaterThanOrEqual(1500); // made again, by the long run
      expect(long.mtimeMs).toBeGreaterThan(failed.mtimeMs);
      expect((await cli(root, ['tags', repo], { env })).code).toBe(0);
      expect(made()).toEqual(long); // a run as long as the one that made it: kept as it is
    } finally {
      server.close();
    }
  });

  it('a command that hashes nothing loads neither node:crypto nor node:zlib nor node:https', async () => {
    const hook = join(home, 'modules.cjs');
    const out = join(home, 'modules.txt');
    writeFileSync(hook, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(out)}, process.moduleLoadList.join('\\n')));\n`);
    const r = await cli(root, ['images'], { env: { NODE_OPTIONS: `--require ${hook}` } });
    expect(r.code).toBe(0);
    const loaded = readFileSync(out, 'utf8').split('\n');
    expect(loaded).toContain('NativeModule fs'); // the hook ran
    expect(loaded.filter((m) => /^NativeModule (crypto|zlib|https|tls)$/.test(m))).toEqual([]);
  });

  it('is neither read nor written in a directory others may write, nor with MYBUILD_CODE_CACHE=0', async () => {
    mkdirSync(join(home, 'cache', 'mybuild', 'code'), { recursive: true });
    chmodSync(join(home, 'cache', 'mybuild'), 0o777);
    const env = { XDG_CACHE_HOME: join(home, 'cache') };
    expect((await cli(root, ['version'], { env })).code).toBe(0);
    expect(files()).toEqual([]);

    chmodSync(join(home, 'cache', 'mybuild'), 0o700);
    chmodSync(join(home, 'cache', 'mybuild', 'code'), 0o700);
    chmodSync(join(home, 'cache'), 0o777); // a directory above it that others may write
    expect((await cli(root, ['version'], { env })).code).toBe(0);
    expect(files()).toEqual([]);
    chmodSync(join(home, 'cache'), 0o755);

    const off = await cli(root, ['version'], { env: { ...env, MYBUILD_CODE_CACHE: '0' } });
    expect(off.code).toBe(0);
    expect(files()).toEqual([]);
    expect((await cli(root, ['version'], { env: { XDG_CACHE_HOME: 'relative/dir', HOME: '' } })).code).toBe(0);
  });
});
