/**
 * writeFileAtomic, now one call into the addon on the thread pool: the bytes exactly (a view's
 * own bytes, not its whole buffer), the mode exactly whatever the umask, the old file replaced
 * whole or not at all, no temp file left behind on success or failure, errors with the errno
 * name and the call that failed.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sys, writeFileAtomic } from '@mybuild/layer-store';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'mybuild-atomic-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe('writeFileAtomic', () => {
  test('writes the bytes of a string or of a view, with the mode exactly, replacing the old file, leaving no temp file', async () => {
    const file = join(dir, 'f.json');
    writeFileSync(file, 'old content, longer than the new one');
    const old = process.umask(0o077);
    try {
      await writeFileAtomic(file, '{"a":"é"}\n', 0o644);
      expect(readFileSync(file, 'utf8')).toBe('{"a":"é"}\n');
      expect(lstatSync(file).mode & 0o7777).toBe(0o644);
      const backing = Buffer.from('xxxxPAYLOADyyyy');
      await writeFileAtomic(file, backing.subarray(4, 11), 0o444);
      expect(readFileSync(file, 'utf8')).toBe('PAYLOAD');
      expect(lstatSync(file).mode & 0o7777).toBe(0o444);
      await writeFileAtomic(file, new Uint8Array(0));
      expect(lstatSync(file).size).toBe(0);
      expect(lstatSync(file).mode & 0o7777).toBe(0o644);
    } finally {
      process.umask(old);
    }
    expect(readdirSync(dir)).toEqual(['f.json']);
  });

  test('racing writers: the file is one of them whole, and no temp file is left', async () => {
    const file = join(dir, 'race');
    const bodies = Array.from({ length: 16 }, (_, i) => Buffer.alloc(64 * 1024 + i, String.fromCharCode(97 + i)));
    await Promise.all(bodies.map((b) => writeFileAtomic(file, b)));
    const got = readFileSync(file);
    expect(bodies.some((b) => b.equals(got))).toBe(true);
    expect(readdirSync(dir)).toEqual(['race']);
  });

  test('a failure names the errno and the call, and leaves nothing of its own behind', async () => {
    await expect(writeFileAtomic(join(dir, 'missing', 'f'), 'x')).rejects.toMatchObject({ code: 'ENOENT', syscall: 'open' });
    expect(readdirSync(dir)).toEqual([]);

    // the rename fails: a non-empty directory is in the way; the temp file goes, the directory stays
    const blocked = join(dir, 'blocked');
    mkdirSync(blocked);
    writeFileSync(join(blocked, 'keep'), 'k');
    await expect(writeFileAtomic(blocked, 'x')).rejects.toMatchObject({ syscall: 'rename' });
    expect(readdirSync(dir)).toEqual(['blocked']);
    expect(readFileSync(join(blocked, 'keep'), 'utf8')).toBe('k');

    // a temp name that exists is not ours: refused, and left as it was
    const tmp = join(dir, 'g.tmp');
    writeFileSync(tmp, 'someone else');
    await expect(sys().writeFileAtomic(join(dir, 'g'), tmp, Buffer.from('x'), 0o644)).rejects.toMatchObject({ code: 'EEXIST', syscall: 'open' });
    expect(readFileSync(tmp, 'utf8')).toBe('someone else');
    expect(readdirSync(dir).sort()).toEqual(['blocked', 'g.tmp']);
  });

  test('arguments are checked before anything is written', () => {
    const native = sys();
    const f = join(dir, 'f');
    expect(() => native.writeFileAtomic(f, `${f}.tmp`, 'text' as unknown as Uint8Array, 0o644)).toThrow(TypeError);
    expect(() => native.writeFileAtomic(f, `${f}.tmp`, new Uint16Array(2) as unknown as Uint8Array, 0o644)).toThrow(TypeError);
    expect(() => native.writeFileAtomic(f, `${f}.tmp`, Buffer.from('x'), 0o10000)).toThrow(TypeError);
    expect(() => native.writeFileAtomic(`${f}\0x`, `${f}.tmp`, Buffer.from('x'), 0o644)).toThrow(TypeError);
    expect(() => native.writeFileAtomic(f, '', Buffer.from('x'), 0o644)).toThrow(TypeError);
    expect(readdirSync(dir)).toEqual([]);
  });
});
