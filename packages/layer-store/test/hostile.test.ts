/**
 * The hostile corpus: each case is a crafted layer run in a temp dir holding `root/` (the
 * target), a sibling `outside/` with a canary, and a canary beside them. Whatever the outcome,
 * nothing outside `root/` may change (type, mode, owner, size, content hash, mtime, link count,
 * xattrs); then the outcome itself is checked: refused with the named error code, or contained.
 */
import { existsSync, lstatSync, mkdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { CompressStream } from 'zstd-napi';
import { afterEach, describe, expect, it } from 'vitest';
import { type ErrorCode, MyBuildError } from '@mybuild/oci';
import { type ApplyMode, applyLayer } from '@mybuild/layer-store';
import { type TarEntry, buildTar, gzip, listTree, nodeInfo, paxRecord, rmrf, streamOf, tarEntry, tempDir, ustarHeader } from './helpers-tar.js';

interface Ctx {
  tmp: string;
  root: string;
  outside: string;
  /** the outside dir as a path relative to the real / (for names that are absolute host paths) */
  outsideAbs: string;
}

interface HostileCase {
  name: string;
  layer: (c: Ctx) => Buffer | Promise<Buffer>;
  /** refused with one of these codes, or contained (no error) */
  outcome: ErrorCode[] | 'contained';
  maxBytes?: number;
  /** extra checks inside root after a contained run */
  check?: (c: Ctx, mode: ApplyMode) => void;
}

const tar = (entries: TarEntry[]) => buildTar(entries);

/** A zstd frame of a tar holding one `bytes`-long file of zeros, made without holding it in memory. */
async function zstdBomb(bytes: number): Promise<Buffer> {
  const zs = new CompressStream();
  const out: Buffer[] = [];
  zs.on('data', (b: Buffer) => out.push(b));
  const done = new Promise((resolve) => zs.on('end', resolve));
  zs.write(tarEntry({ name: 'bomb', size: bytes }).subarray(0, 512));
  const zeros = Buffer.alloc(16 * 1024 * 1024);
  for (let left = bytes; left > 0; left -= zeros.length) {
    if (!zs.write(left >= zeros.length ? zeros : zeros.subarray(0, left))) await new Promise((r) => zs.once('drain', r));
  }
  zs.end();
  await done;
  return Buffer.concat(out);
}

const cases: HostileCase[] = [
  { name: '../ name', layer: () => tar([{ name: '../outside/pwned', data: 'x' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'nested ../ climbing out', layer: () => tar([{ name: 'a/b/../../../outside/pwned', data: 'x' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'absolute name with ..', layer: () => tar([{ name: '/../outside/pwned', data: 'x' }]), outcome: ['UNSAFE_PATH'] },
  {
    name: 'absolute name (host path of outside/)',
    layer: (c) => tar([{ name: `${c.outside}/pwned`, data: 'x' }]),
    outcome: 'contained',
    check: (c) => expect(readFileSync(join(c.root, c.outsideAbs, 'pwned'), 'utf8')).toBe('x'),
  },
  {
    name: 'symlinked parent, absolute target',
    layer: (c) => tar([{ name: 'evil', type: 'symlink', linkname: c.outside }, { name: 'evil/pwned', data: 'x' }]),
    outcome: 'contained',
    check: (c) => expect(readFileSync(join(c.root, c.outsideAbs, 'pwned'), 'utf8')).toBe('x'),
  },
  {
    name: 'symlinked parent, relative target climbing out',
    layer: () => tar([{ name: 'a/', type: 'dir' }, { name: 'a/evil', type: 'symlink', linkname: '../../../outside' }, { name: 'a/evil/pwned', data: 'x' }]),
    outcome: 'contained',
    check: (c) => expect(readFileSync(join(c.root, 'outside/pwned'), 'utf8')).toBe('x'),
  },
  {
    name: 'symlink to an outside file, then a file written "through" it',
    layer: (c) => tar([{ name: 'evil', type: 'symlink', linkname: join(c.outside, 'canary') }, { name: 'evil', data: 'overwrite', mode: 0o777 }]),
    outcome: 'contained',
    check: (c) => expect(nodeInfo(join(c.root, 'evil'))).toMatchObject({ type: 'file', mode: 0o777 }),
  },
  {
    name: 'symlink to an outside file, then a directory entry with its name (no chmod through it)',
    layer: (c) => tar([{ name: 'evil', type: 'symlink', linkname: join(c.outside, 'canary') }, { name: 'evil/', type: 'dir', mode: 0o777, uid: 99 }]),
    outcome: 'contained',
    check: (c) => expect(nodeInfo(join(c.root, 'evil'))).toMatchObject({ type: 'dir', mode: 0o777, uid: 99 }),
  },
  {
    name: 'hardlink to ../outside',
    layer: () => tar([{ name: 'h', type: 'link', linkname: '../outside/canary' }]),
    outcome: ['UNSAFE_PATH'],
  },
  {
    name: 'hardlink to an absolute host path',
    layer: (c) => tar([{ name: 'h', type: 'link', linkname: join(c.outside, 'canary') }]),
    outcome: ['INVALID_ARGUMENT'], // resolved inside the root, where it does not exist
  },
  {
    name: 'hardlink reached through a symlink to outside/',
    layer: (c) => tar([{ name: 'evil', type: 'symlink', linkname: c.outside }, { name: 'h', type: 'link', linkname: 'evil/canary' }]),
    outcome: ['INVALID_ARGUMENT'],
  },
  {
    name: 'hardlink to a symlink pointing outside (links the symlink, not its target)',
    layer: (c) => tar([{ name: 's', type: 'symlink', linkname: join(c.outside, 'canary') }, { name: 'h', type: 'link', linkname: 's' }, { name: 'h', data: 'replaced' }]),
    outcome: 'contained',
  },
  { name: 'hardlink to a directory', layer: () => tar([{ name: 'd/', type: 'dir' }, { name: 'h', type: 'link', linkname: 'd' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'whiteout of ".."', layer: () => tar([{ name: '.wh...', data: '' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'nested whiteout of ".."', layer: () => tar([{ name: 'sub/', type: 'dir' }, { name: 'sub/.wh...', data: '' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'whiteout of "."', layer: () => tar([{ name: 'sub/.wh..', data: '' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'whiteout with ../ in its parent', layer: () => tar([{ name: '../.wh.outside', data: '' }]), outcome: ['UNSAFE_PATH'] },
  {
    name: 'whiteout through a symlinked parent',
    layer: (c) => tar([{ name: 'evil', type: 'symlink', linkname: c.outside }, { name: 'evil/.wh.canary', data: '' }]),
    outcome: 'contained',
  },
  {
    name: 'opaque marker through a symlinked parent',
    layer: (c) => tar([{ name: 'evil', type: 'symlink', linkname: c.outside }, { name: 'evil/.wh..wh..opq', data: '' }]),
    outcome: 'contained',
  },
  {
    name: 'opaque marker through a relative symlink climbing out',
    layer: () => tar([{ name: 'evil', type: 'symlink', linkname: '../outside' }, { name: 'evil/.wh..wh..opq', data: '' }, { name: 'evil/.wh.canary', data: '' }]),
    outcome: 'contained',
  },
  {
    name: 'duplicate entries: directory replaced by a symlink, then a file under it',
    layer: (c) => tar([{ name: 'd/', type: 'dir' }, { name: 'd/a', data: 'a' }, { name: 'd', type: 'symlink', linkname: c.outside }, { name: 'd/pwned', data: 'x' }]),
    outcome: 'contained',
    check: (c) => {
      expect(nodeInfo(join(c.root, 'd')).type).toBe('symlink');
      expect(readFileSync(join(c.root, c.outsideAbs, 'pwned'), 'utf8')).toBe('x');
    },
  },
  {
    name: 'directory times after a parent was replaced by a symlink to outside/ (which has the same child)',
    layer: (c) =>
      tar([
        { name: 'd/', type: 'dir' },
        { name: 'd/sub/', type: 'dir', mtime: 1000, mode: 0o700 },
        { name: 'd', type: 'symlink', linkname: c.outside },
        { name: 'd/sub/pwned', data: 'x' },
      ]),
    outcome: 'contained',
  },
  {
    name: 'directory replaced by a symlink to an outside dir, then a directory entry under it',
    layer: () => tar([{ name: 'd/', type: 'dir' }, { name: 'd', type: 'symlink', linkname: '../outside' }, { name: 'd/sub/', type: 'dir', mode: 0o777, uid: 7, mtime: 5 }]),
    outcome: 'contained',
  },
  { name: 'device node named outside', layer: () => tar([{ name: '../outside/null', type: 'char', devmajor: 1, devminor: 3 }]), outcome: ['UNSAFE_PATH'] },
  {
    name: 'device node through a symlinked parent',
    layer: (c) => tar([{ name: 'evil', type: 'symlink', linkname: c.outside }, { name: 'evil/sda', type: 'block', devmajor: 8, devminor: 0 }]),
    outcome: 'contained',
    check: (c) => expect(nodeInfo(join(c.root, c.outsideAbs, 'sda')).type).toBe('block'),
  },
  { name: 'symlink loop in the parents', layer: () => tar([{ name: 'a', type: 'symlink', linkname: 'b' }, { name: 'b', type: 'symlink', linkname: 'a' }, { name: 'a/x', data: 'x' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'root directory replaced by a symlink', layer: (c) => tar([{ name: './', type: 'symlink', linkname: c.outside }, { name: 'pwned', data: 'x' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'root directory replaced by a file', layer: () => tar([{ name: '.', data: 'x' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'NUL byte in a PAX path', layer: () => tar([{ name: 'x', data: 'x', pax: { path: 'ok\0../../outside/pwned' } }]), outcome: ['UNSAFE_PATH'] },
  { name: 'overlong path component', layer: () => tar([{ name: `${'a'.repeat(300)}`, data: 'x' }]), outcome: ['UNSAFE_PATH'] },
  { name: 'overlong path', layer: () => tar([{ name: Array.from({ length: 25 }, () => 'd'.repeat(200)).join('/'), data: 'x' }]), outcome: ['UNSAFE_PATH'] },
  {
    name: 'gzip bomb beyond maxBytes',
    layer: () => gzip(tar([{ name: 'bomb', data: Buffer.alloc(64 * 1024 * 1024) }])),
    maxBytes: 4 * 1024 * 1024,
    outcome: ['SIZE_EXCEEDED'],
  },
  { name: 'zstd bomb (1 GiB of zeros in one input chunk) beyond maxBytes', layer: () => zstdBomb(1024 ** 3), maxBytes: 4 * 1024 * 1024, outcome: ['SIZE_EXCEEDED'] },
  { name: 'truncated tar (cut inside a body)', layer: () => tar([{ name: 'a', data: Buffer.alloc(5000, 1) }]).subarray(0, 512 + 3000), outcome: ['INVALID_ARGUMENT'] },
  {
    name: 'entry claiming more bytes than present',
    layer: () => Buffer.concat([ustarHeader({ name: 'liar', typeflag: '0', size: 1024 * 1024 }), Buffer.alloc(512, 0x41), Buffer.alloc(1024)]),
    outcome: ['INVALID_ARGUMENT'],
  },
  {
    name: 'PAX size far beyond the data',
    layer: () => {
      const body = paxRecord('size', '1000000000000');
      return Buffer.concat([ustarHeader({ name: 'p', typeflag: 'x', size: body.length }), body, Buffer.alloc(512 - body.length), ustarHeader({ name: 'liar', typeflag: '0', size: 10 }), Buffer.alloc(1536)]);
    },
    outcome: ['INVALID_ARGUMENT'],
  },
  { name: 'truncated gzip', layer: () => gzip(tar([{ name: 'a', data: Buffer.alloc(100_000, 3) }])).subarray(0, 200), outcome: ['INVALID_ARGUMENT'] },
  { name: 'not a tar at all', layer: () => Buffer.from('this is not a tar archive'.repeat(40)), outcome: ['INVALID_ARGUMENT'] },
  {
    name: 'directory with a non-zero size (body parsed as headers by some readers)',
    layer: () => Buffer.concat([ustarHeader({ name: 'd/', typeflag: '5', size: 512 }), tarEntry({ name: '../outside/pwned', data: 'x' }), Buffer.alloc(1024)]),
    outcome: ['UNSAFE_PATH'],
  },
];

describe.each<ApplyMode>(['overlay', 'flatten'])('hostile layers, %s mode', (mode) => {
  let ctx: Ctx | undefined;
  afterEach(() => {
    if (ctx) rmrf(ctx.tmp);
    ctx = undefined;
  });

  it.each(cases)('$name', async (tc) => {
    const tmp = tempDir('mybuild-hostile-');
    const c: Ctx = { tmp, root: join(tmp, 'root'), outside: join(tmp, 'outside'), outsideAbs: join(tmp, 'outside').slice(1) };
    ctx = c;
    mkdirSync(c.root);
    mkdirSync(join(c.outside, 'sub'), { recursive: true });
    writeFileSync(join(c.outside, 'canary'), 'secret');
    writeFileSync(join(c.outside, 'sub', 'inner'), 'inner');
    writeFileSync(join(tmp, 'canary'), 'top');
    symlinkSync('outside/canary', join(tmp, 'link-to-canary'));
    utimesSync(join(c.outside, 'sub'), 12345, 12345);
    const before = listTree(tmp, ['root']);

    const layer = await tc.layer(c);
    let err: unknown;
    const started = Date.now();
    const rss0 = process.memoryUsage().rss;
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss - rss0);
    }, 2);
    try {
      await applyLayer(streamOf(layer), c.root, { mode, ...(tc.maxBytes ? { maxBytes: tc.maxBytes } : {}) });
    } catch (e) {
      err = e;
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().rss - rss0);
    const elapsed = Date.now() - started;

    expect(listTree(tmp, ['root'])).toEqual(before);
    expect(lstatSync(join(c.outside, 'canary')).nlink).toBe(1);
    if (tc.outcome === 'contained') {
      expect(err).toBeUndefined();
      tc.check?.(c, mode);
    } else {
      expect(err).toBeInstanceOf(MyBuildError);
      expect(tc.outcome).toContain((err as MyBuildError).code);
      expect((err as MyBuildError).oneLine()).not.toContain('\n');
    }
    // bombs are stopped early, not after expanding everything, and never held in memory
    if (tc.maxBytes) {
      expect(elapsed).toBeLessThan(5000);
      expect(peak).toBeLessThan(256 * 1024 * 1024);
    }
  });
});

describe('hostile input through the stream itself', () => {
  it('stops reading and releases the source when an entry is refused', async () => {
    const tmp = tempDir('mybuild-hostile-');
    try {
      const head = tar([{ name: '../escape', data: 'x' }]).subarray(0, 1024);
      let destroyed = false;
      let pulled = 0;
      // An endless source: extraction must give up on it instead of reading forever.
      const src = new Readable({
        read() {
          pulled++;
          this.push(pulled === 1 ? head : Buffer.alloc(65536));
        },
        destroy(e, cb) {
          destroyed = true;
          cb(e);
        },
      });
      await expect(applyLayer(src, join(tmp, 'root'), { mode: 'overlay', compression: 'none', maxBytes: 256 * 1024 * 1024 })).rejects.toMatchObject({ code: 'UNSAFE_PATH' });
      expect(pulled).toBeLessThan(100);
      expect(destroyed).toBe(true);
      expect(existsSync(join(tmp, 'escape'))).toBe(false);
    } finally {
      rmrf(tmp);
    }
  }, 20_000);
});
