/**
 * FileSource listings through the addon's scandir: the same entries, in the same (bytewise)
 * order, with stats equal to lstatSync's in every field a Stats has (so stat-cache entries
 * written from lstatSync still match); .dockerignore applied as before; missing directories
 * empty; other failures reported by Node's own readdirSync/lstatSync, with their messages; and
 * the plain Node listing when scandir fails (other than ENOENT/ENOTDIR) or cannot stat an entry.
 */
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, unlinkSync, writeFileSync, chmodSync, type Stats } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NativeSys } from '@mybuild/layer-store';

type Scan = NativeSys['scandir'];
/** Replaces the addon's scandir for one test: called with the path and the real scandir. */
const hook = vi.hoisted(() => ({ scandir: undefined as undefined | ((path: string, real: (path: string) => [string, Float64Array]) => [string, Float64Array]), calls: 0 }));

vi.mock('@mybuild/layer-store', async (importOriginal) => {
  const real = await importOriginal<typeof import('@mybuild/layer-store')>();
  let wrapped: NativeSys | undefined;
  return {
    ...real,
    sys: (): NativeSys => {
      if (wrapped) return wrapped;
      const s = real.sys();
      const scan: Scan = (path) => {
        hook.calls++;
        return hook.scandir ? hook.scandir(path, s.scandir.bind(s)) : s.scandir(path);
      };
      wrapped = { ...s, scandir: scan };
      return wrapped;
    },
  };
});

const { FileSource, listDir, bytewise } = await import('../src/executor/source.js');
const { StatCache } = await import('../src/executor/statCache.js');
const { IgnoreMatcher } = await import('../src/frontend/dockerignore.js');
const { sys } = await import('@mybuild/layer-store');

const NUMERIC = ['dev', 'ino', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'size', 'blksize', 'blocks', 'atimeMs', 'mtimeMs', 'ctimeMs', 'birthtimeMs'] as const;
const PREDICATES = ['isFile', 'isDirectory', 'isSymbolicLink', 'isFIFO', 'isSocket', 'isBlockDevice', 'isCharacterDevice'] as const;
const DATES = ['atime', 'mtime', 'ctime', 'birthtime'] as const;

/** Everything a caller can read from a Stats, as plain data. */
function view(st: Stats): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of NUMERIC) out[k] = st[k];
  for (const k of PREDICATES) out[k] = st[k]();
  for (const k of DATES) out[k] = st[k].getTime();
  return out;
}

/** The listing as it was before scandir: readdirSync, sorted bytewise, lstatSync each (gone: skipped). */
function nodeListing(host: string): { name: string; st: Record<string, unknown> }[] {
  return readdirSync(host)
    .sort(bytewise)
    .flatMap((name) => {
      const st = lstatSync(join(host, name), { throwIfNoEntry: false });
      return st ? [{ name, st: view(st) }] : [];
    });
}

function expectSameNumbers(got: Record<string, unknown>[], want: Record<string, unknown>[]): void {
  expect(got).toHaveLength(want.length);
  got.forEach((g, i) => {
    for (const [k, v] of Object.entries(want[i]!)) {
      if (!Object.is(g[k], v)) expect({ entry: i, field: k, value: g[k] }).toEqual({ entry: i, field: k, value: v });
    }
  });
}

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mybuild-scan-'));
  hook.scandir = undefined;
  hook.calls = 0;
});
afterEach(() => {
  hook.scandir = undefined;
  chmodSync(dir, 0o700);
  rmSync(dir, { recursive: true, force: true });
});

/** A tree with one of everything a context may hold. */
function makeTree(root: string): void {
  mkdirSync(join(root, 'sub/deeper'), { recursive: true });
  writeFileSync(join(root, 'sub/deeper/leaf'), 'leaf');
  writeFileSync(join(root, 'file'), 'content');
  writeFileSync(join(root, 'empty'), '');
  writeFileSync(join(root, 'B-upper'), 'B');
  writeFileSync(join(root, 'a-lower'), 'a');
  writeFileSync(join(root, 'é-accent'), 'é');
  writeFileSync(join(root, 'emoji-\u{1F600}'), 'smile');
  writeFileSync(join(root, '\uE000-private'), 'pua'); // sorts after the emoji in UTF-16, as before
  writeFileSync(join(root, 'new\nline'), 'nl');
  writeFileSync(join(root, 'x'.repeat(255)), 'long');
  writeFileSync(join(root, 'hard'), 'twice');
  linkSync(join(root, 'hard'), join(root, 'hard2'));
  writeFileSync(join(root, 'suid'), '#!/bin/sh\n');
  chmodSync(join(root, 'suid'), 0o4755);
  symlinkSync('file', join(root, 'link'));
  symlinkSync('sub', join(root, 'link-dir'));
  symlinkSync('/nowhere', join(root, 'dangling'));
  sys().mknod(join(root, 'fifo'), 0o010644, 0, 0);
  writeFileSync(join(root, 'nanos'), '');
  sys().lutimens(join(root, 'nanos'), 1_700_000_000, 123_456_789, 1_600_000_000, 987_654_321);
  writeFileSync(join(root, 'pre-1970'), '');
  sys().lutimens(join(root, 'pre-1970'), -1_000_000, 1, -86_400, 500_000_001);
}

describe('FileSource.children through scandir', () => {
  test('the same entries, order and stats as readdirSync + lstatSync', () => {
    makeTree(dir);
    const src = new FileSource(dir);
    for (const rel of ['', 'sub', 'sub/deeper']) {
      const want = nodeListing(join(dir, rel));
      const got = src.children(rel);
      expect(got.map((c) => c.name)).toEqual(want.map((w) => w.name));
      expectSameNumbers(
        got.map((c) => view(c.st)),
        want.map((w) => w.st),
      );
    }
    expect(hook.calls).toBe(3); // the addon listed them
    const byName = new Map(src.children('').map((c) => [c.name, c.st]));
    expect(byName.get('hard')!.nlink).toBe(2);
    expect(byName.get('suid')!.mode & 0o7777).toBe(0o4755);
    expect(byName.get('link-dir')!.isSymbolicLink()).toBe(true);
    expect(byName.get('fifo')!.isFIFO()).toBe(true);
    expect(byName.get('pre-1970')!.mtimeMs).toBeLessThan(0);
    // remembered: a second call lists nothing again
    src.children('');
    expect(hook.calls).toBe(3);
  });

  test('names that are not valid UTF-8 read as readdirSync gives them (U+FFFD), lstat-ed by that name', () => {
    const raw = (bytes: number[]): Buffer => Buffer.concat([Buffer.from(`${dir}/`), Buffer.from(bytes)]);
    writeFileSync(raw([0x61, 0xff]), 'not utf-8');
    writeFileSync(raw([0x61, 0xfe]), 'not utf-8 either');
    writeFileSync(raw([0x62, 0xc3]), 'cut short');
    writeFileSync(join(dir, 'a\uFFFD'), 'real'); // what both a\xff and a\xfe read as
    writeFileSync(join(dir, 'plain'), '');
    const got = listDir(dir);
    const want = nodeListing(dir);
    expect(got.map((c) => c.name)).toEqual(['a\uFFFD', 'a\uFFFD', 'a\uFFFD', 'plain']);
    expect(got.map((c) => c.name)).toEqual(want.map((w) => w.name));
    expectSameNumbers(
      got.map((c) => view(c.st)),
      want.map((w) => w.st),
    );
  });

  test('stat-cache entries written from lstatSync stats still match', async () => {
    makeTree(dir);
    const file = join(dir, '..', `${dir.split('/').pop()}.statcache`);
    try {
      const before = StatCache.load(file);
      const names = readdirSync(dir).filter((n) => lstatSync(join(dir, n)).isFile());
      for (const n of names) before.set(n, lstatSync(join(dir, n)), 'ab'.repeat(32));
      await before.save(Date.now() + 60_000);
      const after = StatCache.load(file);
      const src = new FileSource(dir, { statCache: after });
      for (const c of src.children('')) if (c.st.isFile()) expect(after.lookup(c.name, c.st)).toBe('ab'.repeat(32));
      expect(after.hits).toBe(names.length);
      expect(after.misses).toBe(0);
    } finally {
      rmSync(file, { force: true });
    }
  });

  test('a save keeps the loaded entries this build found valid and the ones it set; drops unused and stale ones', async () => {
    for (const n of ['a', 'b', 'c', 'd']) writeFileSync(join(dir, n), n);
    const st = (n: string) => lstatSync(join(dir, n));
    const file = join(dir, '..', `${dir.split('/').pop()}.keep.statcache`);
    try {
      const first = StatCache.load(file);
      for (const n of ['a', 'b', 'c']) first.set(n, st(n), n.repeat(64));
      await first.save(Date.now() + 60_000);
      const second = StatCache.load(file);
      expect(second.lookup('a', st('a'))).toBe('a'.repeat(64)); // used
      expect(second.lookup('a', st('a'))).toBe('a'.repeat(64)); // twice: still one entry
      writeFileSync(join(dir, 'b'), 'bb');
      expect(second.lookup('b', st('b'))).toBeUndefined(); // stale
      second.set('d', st('d'), 'd'.repeat(64));
      await second.save(Date.now() + 60_000);
      const third = StatCache.load(file);
      expect(third.lookup('a', st('a'))).toBe('a'.repeat(64));
      expect(third.lookup('d', st('d'))).toBe('d'.repeat(64));
      expect(third.lookup('b', st('b'))).toBeUndefined();
      expect(third.lookup('c', st('c'))).toBeUndefined(); // not used by the second build: not kept
      expect([third.hits, third.misses]).toEqual([2, 2]);
    } finally {
      rmSync(file, { force: true });
    }
  });

  test('.dockerignore: excluded entries left out, a directory an exception reaches into kept', () => {
    mkdirSync(join(dir, 'logs/keep'), { recursive: true });
    writeFileSync(join(dir, 'logs/a.log'), '');
    writeFileSync(join(dir, 'logs/keep/b.log'), '');
    mkdirSync(join(dir, 'tmp'));
    writeFileSync(join(dir, 'tmp/x'), '');
    writeFileSync(join(dir, 'main.go'), '');
    writeFileSync(join(dir, 'notes.md'), '');
    const ignore = new IgnoreMatcher(['logs', 'tmp', '*.md', '!logs/keep']);
    const src = new FileSource(dir, { ignore });
    expect(src.children('').map((c) => c.name)).toEqual(['logs', 'main.go']);
    expect(src.children('logs').map((c) => c.name)).toEqual(['keep']);
    expect(src.children('logs/keep').map((c) => c.name)).toEqual(['b.log']);
    expect(src.lstat('tmp')).toBeUndefined();
  });

  test('a missing directory or a file lists as empty; other errors are readdirSync’s', () => {
    writeFileSync(join(dir, 'file'), '');
    symlinkSync('loop', join(dir, 'loop'));
    const src = new FileSource(dir);
    expect(src.children('missing')).toEqual([]);
    expect(src.children('file')).toEqual([]);
    expect(src.children('file/below')).toEqual([]);
    let want: unknown;
    try {
      readdirSync(join(dir, 'loop'));
    } catch (err) {
      want = err;
    }
    expect(want).toMatchObject({ code: 'ELOOP' });
    expect(() => src.children('loop')).toThrow((want as Error).message);
    try {
      src.children('loop');
    } catch (err) {
      expect(err).toMatchObject({ code: 'ELOOP', syscall: 'scandir', path: join(dir, 'loop') });
    }
  });

  test.skipIf(process.getuid?.() === 0)('an unreadable directory: readdirSync’s EACCES, as before', () => {
    mkdirSync(join(dir, 'closed'));
    chmodSync(join(dir, 'closed'), 0o000);
    const src = new FileSource(dir);
    expect(() => src.children('closed')).toThrow(/^EACCES: permission denied, scandir /);
  });
});

describe('listDir fallbacks', () => {
  test('an entry the addon could not lstat is lstat-ed by Node (and skipped when gone)', () => {
    makeTree(dir);
    writeFileSync(join(dir, 'gone'), '');
    hook.scandir = (path, real) => {
      const [names, nums] = real(path);
      const list = names.split('\0');
      list.forEach((n, i) => {
        if (n === 'file' || n === 'gone' || n === 'fifo') nums[i * 18 + 1] = -1;
      });
      unlinkSync(join(dir, 'gone')); // removed after the addon saw it
      return [names, nums];
    };
    const got = listDir(dir);
    const want = nodeListing(dir);
    expect(got.map((c) => c.name)).toEqual(want.map((w) => w.name));
    expect(got.map((c) => c.name)).not.toContain('gone');
    expectSameNumbers(
      got.map((c) => view(c.st)),
      want.map((w) => w.st),
    );
  });

  test('an entry whose Node lstat fails too: lstatSync’s error', () => {
    writeFileSync(join(dir, 'not-dir'), '');
    const failed = new Float64Array(18);
    failed[1] = -1;
    // (a name with a slash cannot come from readdir; here it makes lstat fail with ENOTDIR)
    hook.scandir = () => ['not-dir/f', failed];
    expect(() => listDir(dir)).toThrow(`ENOTDIR: not a directory, lstat '${dir}/not-dir/f'`);
  });

  test('a scandir failure other than ENOENT/ENOTDIR: the listing Node gives', () => {
    makeTree(dir);
    hook.scandir = () => {
      throw Object.assign(new Error('EIO: i/o error, scandir'), { code: 'EIO' });
    };
    const got = listDir(dir);
    const want = nodeListing(dir);
    expect(got.map((c) => c.name)).toEqual(want.map((w) => w.name));
    expectSameNumbers(
      got.map((c) => view(c.st)),
      want.map((w) => w.st),
    );
    // and ENOENT from the addon is an empty listing, without asking Node
    hook.scandir = () => {
      throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
    };
    expect(listDir(dir)).toEqual([]);
  });
});
