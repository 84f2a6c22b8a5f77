/**
 * The addon's scandir: a directory's entries with their lstat (not followed), the numbers being
 * exactly those Node's lstatSync puts in an fs.Stats (times in ms to the bit), for every kind
 * of entry; '.' and '..' left out; errors as errno codes.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, lchownSync, linkSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync, type Stats } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sys } from '@mybuild/layer-store';

const FIELDS = 18;
const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mybuild-scandir-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

interface Entry {
  name: string;
  f: number[];
}

function scan(path: string): Entry[] {
  const [joined, nums] = sys().scandir(path);
  expect(nums).toBeInstanceOf(Float64Array);
  expect(nums.length % FIELDS).toBe(0);
  const count = nums.length / FIELDS;
  const names = count === 0 ? [] : joined.split('\0');
  expect(names).toHaveLength(count);
  return names.map((name, i) => ({ name, f: Array.from(nums.subarray(i * FIELDS, (i + 1) * FIELDS)) }));
}

const KEYS = ['dev', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'blksize', 'ino', 'size', 'blocks', 'atimeMs', 'mtimeMs', 'ctimeMs', 'birthtimeMs'] as const;
type Numbers = Record<(typeof KEYS)[number], number>;

/** The fs.Stats numbers lstatSync gives, from scandir's fields (Node's msFromTimeSpec). */
function asStats(f: number[]): Numbers {
  const ms = (i: number): number => f[i]! * 1000 + f[i + 1]! / 1e6;
  return {
    dev: f[0]!,
    mode: f[1]!,
    nlink: f[2]!,
    uid: f[3]!,
    gid: f[4]!,
    rdev: f[5]!,
    blksize: f[6]!,
    ino: f[7]!,
    size: f[8]!,
    blocks: f[9]!,
    atimeMs: ms(10),
    mtimeMs: ms(12),
    ctimeMs: ms(14),
    birthtimeMs: ms(16),
  };
}

function ofStats(st: Stats): Numbers {
  return Object.fromEntries(KEYS.map((k) => [k, st[k]])) as Numbers;
}

/** Every entry's fields equal (Object.is) lstatSync's, and the names are readdirSync's. */
function expectSameAsNode(path: string): Entry[] {
  const entries = scan(path);
  expect(entries.map((e) => e.name).sort()).toEqual(readdirSync(path).sort());
  for (const e of entries) {
    const want = ofStats(lstatSync(join(path, e.name)));
    const got = asStats(e.f);
    for (const k of KEYS) {
      if (!Object.is(got[k], want[k])) expect({ name: e.name, field: k, value: got[k] }).toEqual({ name: e.name, field: k, value: want[k] });
    }
  }
  return entries;
}

describe('scandir', () => {
  test('files, directories, symlinks (not followed), a fifo, a socket, devices: the numbers of lstatSync', async () => {
    writeFileSync(join(dir, 'file'), 'hello');
    writeFileSync(join(dir, 'empty'), '');
    writeFileSync(join(dir, 'big'), Buffer.alloc(3 * 65536 + 17, 1));
    mkdirSync(join(dir, 'sub'));
    writeFileSync(join(dir, 'sub', 'inner'), 'x');
    symlinkSync('file', join(dir, 'link-file'));
    symlinkSync('sub', join(dir, 'link-dir'));
    symlinkSync('/nowhere/at/all', join(dir, 'link-dangling'));
    sys().mknod(join(dir, 'fifo'), S_IFIFO | 0o640, 0, 0);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(dir, 'sock'), resolve));
    let device = true;
    try {
      sys().mknod(join(dir, 'null'), S_IFCHR | 0o666, 1, 3);
    } catch {
      device = false; // not permitted here (unprivileged)
    }
    try {
      const entries = expectSameAsNode(dir);
      const byName = new Map(entries.map((e) => [e.name, asStats(e.f)]));
      expect(byName.get('link-dir')!.mode & 0o170000).toBe(0o120000);
      expect(byName.get('link-dangling')!.size).toBe('/nowhere/at/all'.length);
      expect(byName.get('fifo')!.mode).toBe(S_IFIFO | 0o640);
      expect(byName.get('sock')!.mode & 0o170000).toBe(0o140000);
      if (device) expect(byName.get('null')!.rdev).toBe(lstatSync('/dev/null').rdev);
      expect(entries.map((e) => e.name)).not.toContain('.');
      expect(entries.map((e) => e.name)).not.toContain('..');
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  test('hard links (nlink 2), setuid/setgid/sticky bits, owners, nanosecond and pre-1970 times', () => {
    writeFileSync(join(dir, 'a'), 'linked');
    linkSync(join(dir, 'a'), join(dir, 'b'));
    writeFileSync(join(dir, 'suid'), '#!/bin/sh\n');
    chmodSync(join(dir, 'suid'), 0o4755);
    writeFileSync(join(dir, 'sgid'), '');
    chmodSync(join(dir, 'sgid'), 0o2710);
    mkdirSync(join(dir, 'sticky'));
    chmodSync(join(dir, 'sticky'), 0o1777);
    writeFileSync(join(dir, 'ns'), '');
    sys().lutimens(join(dir, 'ns'), 1_700_000_000, 123_456_789, 1_600_000_000, 999_999_999);
    writeFileSync(join(dir, 'old'), '');
    sys().lutimens(join(dir, 'old'), -1_000_000, 1, -86_400, 500_000_001);
    symlinkSync('a', join(dir, 'timed-link'));
    sys().lutimens(join(dir, 'timed-link'), 1_234_567_890, 42, 1_234_567_891, 7);
    if (process.getuid?.() === 0) {
      writeFileSync(join(dir, 'owned'), '');
      lchownSync(join(dir, 'owned'), 1234, 5678);
    }
    const entries = expectSameAsNode(dir);
    const st = new Map(entries.map((e) => [e.name, asStats(e.f)]));
    expect(st.get('a')!.nlink).toBe(2);
    expect(st.get('b')!.ino).toBe(st.get('a')!.ino);
    expect(st.get('suid')!.mode & 0o7777).toBe(0o4755);
    expect(st.get('sgid')!.mode & 0o7777).toBe(0o2710);
    expect(st.get('sticky')!.mode & 0o7777).toBe(0o1777);
    expect(st.get('ns')!.mtimeMs).toBe(lstatSync(join(dir, 'ns')).mtimeMs);
    expect(st.get('old')!.mtimeMs).toBeLessThan(0);
    if (st.has('owned')) expect([st.get('owned')!.uid, st.get('owned')!.gid]).toEqual([1234, 5678]);
  });

  test('names of 255 bytes, with newlines, spaces and non-ASCII characters', () => {
    const names = ['x'.repeat(255), `${'é'.repeat(127)}z`, 'line\nbreak', '\n', 'tab\there', ' lead', 'trail ', 'emoji-\u{1F600}', '\uE000', '-', '.hidden', '..dots', '...'];
    for (const n of names) writeFileSync(join(dir, n), n);
    const entries = expectSameAsNode(dir);
    expect(entries.map((e) => e.name).sort()).toEqual([...names].sort());
    for (const e of entries) expect(asStats(e.f).size).toBe(Buffer.byteLength(e.name));
  });

  test('an empty directory has no entries', () => {
    const [joined, nums] = sys().scandir(dir);
    expect(joined).toBe('');
    expect(nums.length).toBe(0);
  });

  test('a large directory: every entry, each once', () => {
    for (let i = 0; i < 3000; i++) writeFileSync(join(dir, `f${i}`), String(i));
    const entries = expectSameAsNode(dir);
    expect(new Set(entries.map((e) => e.name)).size).toBe(3000);
  });

  test('a missing directory is ENOENT, a file ENOTDIR, a symlink to a directory is followed', () => {
    writeFileSync(join(dir, 'file'), '');
    mkdirSync(join(dir, 'd'));
    writeFileSync(join(dir, 'd', 'in'), '');
    symlinkSync('d', join(dir, 'to-d'));
    expect(() => sys().scandir(join(dir, 'missing'))).toThrow(expect.objectContaining({ code: 'ENOENT', syscall: 'scandir' }));
    expect(() => sys().scandir(join(dir, 'file'))).toThrow(expect.objectContaining({ code: 'ENOTDIR', syscall: 'scandir' }));
    expect(scan(join(dir, 'to-d')).map((e) => e.name)).toEqual(['in']);
    expect(() => sys().scandir(`${dir}/${'x'.repeat(5000)}`)).toThrow(TypeError);
    expect(() => sys().scandir('a\0b')).toThrow(TypeError);
  });

  test('entries removed while the directory is listed are left out, never half-read', async () => {
    const n = 4000;
    for (let i = 0; i < n; i++) writeFileSync(join(dir, `f${i}`), '');
    // another process removes them while this one lists: entries read by getdents but gone
    // before their statx are skipped (not an error, not an entry with made-up numbers)
    const rm = spawn(process.execPath, ['-e', `const fs=require('fs');for(let i=0;i<${n};i++)fs.unlinkSync(${JSON.stringify(dir)}+'/f'+i)`]);
    let exited = false;
    const done = new Promise((resolve) => rm.on('exit', resolve)).then(() => (exited = true));
    for (let scans = 1; !exited; scans++) {
      for (const e of scan(dir)) {
        expect(e.f[1]! & 0o170000).toBe(0o100000);
        expect(e.name).toMatch(/^f\d+$/);
      }
      if (scans % 4 === 0) await new Promise((resolve) => setImmediate(resolve));
    }
    await done;
    expect(rm.exitCode).toBe(0);
    expect(scan(dir)).toEqual([]);
  });

  test.skipIf(process.getuid?.() !== 0)('an entry whose lstat fails (not ENOENT) has mode -1', () => {
    // a directory others may read but not search: readdir works, lstat of an entry is EACCES
    const locked = join(dir, 'locked');
    mkdirSync(locked);
    writeFileSync(join(locked, 'secret'), '');
    chmodSync(dir, 0o755);
    chmodSync(locked, 0o744);
    const addon = fileURLToPath(new URL('../build/sys.node', import.meta.url));
    const script = `const s=require(${JSON.stringify(process.env.MYBUILD_NATIVE || addon)});const [n,f]=s.scandir(${JSON.stringify(locked)});console.log(JSON.stringify([n,Array.from(f)]))`;
    const r = spawnSync(process.execPath, ['-e', script], { uid: 65534, gid: 65534, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    const [names, nums] = JSON.parse(r.stdout) as [string, number[]];
    expect(names).toBe('secret');
    expect(nums).toHaveLength(FIELDS);
    expect(nums[1]).toBe(-1);
  });
});
