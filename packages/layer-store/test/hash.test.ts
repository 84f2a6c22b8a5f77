import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { closeSync, fsyncSync, openSync, readFileSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Store, sys } from '@mybuild/layer-store';
import { createHash as ociCreateHash, randomBytes as ociRandomBytes, sha256Of } from '@mybuild/oci';
import { sha256, tempStore } from './helpers-store.js';

const hex = (data: Buffer) => createHash('sha256').update(data).digest('hex');

describe('native sha256 and appendHashed', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mybuild-hash-'));
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  test('this Node exports the OpenSSL symbols the addon looks up', () => {
    expect(sys().sha256Create()).not.toBeNull();
  });

  test('digest and file content equal node:crypto and the input, for any split into appends', async () => {
    for (const [parts, size] of [[1, 0], [1, 1], [3, 63], [7, 64 * 1024 + 5], [1500, 700], [2, 5 * 1024 * 1024 + 3]] as const) {
      const data = randomBytes(size);
      const file = join(dir, `out-${parts}-${size}`);
      const fd = openSync(file, 'a', 0o600);
      const h = sys().sha256Create()!;
      try {
        // Uneven pieces, sent in calls of up to 1024 buffers each.
        const pieces: Buffer[] = [];
        let at = 0;
        for (let i = 0; i < parts; i++) {
          const end = i === parts - 1 ? size : Math.min(size, at + Math.floor(size / parts) + (i % 3));
          pieces.push(data.subarray(at, end));
          at = end;
        }
        const nonEmpty = pieces.filter((p) => p.length > 0);
        let written = 0;
        for (let i = 0; i < nonEmpty.length; i += 1024) written += await sys().appendHashed(fd, h, nonEmpty.slice(i, i + 1024), i === 0);
        expect(written).toBe(size);
      } finally {
        closeSync(fd);
      }
      expect(sys().sha256Digest(h)).toBe(hex(data));
      expect(readFileSync(file).equals(data)).toBe(true);
    }
  });

  test('a failed write rejects with the errno code; misuse is a TypeError, not a crash', async () => {
    const h = sys().sha256Create()!;
    const fd = openSync(join(dir, 'ro'), 'w');
    closeSync(fd);
    const ro = openSync(join(dir, 'ro'), 'r');
    try {
      await expect(sys().appendHashed(ro, h, [Buffer.from('x')], false)).rejects.toMatchObject({ code: 'EBADF' });
    } finally {
      closeSync(ro);
    }
    expect(() => sys().appendHashed(1, h, [], false)).toThrow(TypeError);
    expect(() => sys().appendHashed(1, h, ['text' as unknown as Buffer], false)).toThrow(TypeError);
    expect(() => sys().appendHashed(1, {} as never, [Buffer.from('x')], false)).toThrow(TypeError);
    const busy = openSync(join(dir, 'busy'), 'a');
    const p = sys().appendHashed(busy, h, [Buffer.alloc(1 << 20)], false);
    // One append per context at a time: a second one while the first runs is refused.
    expect(() => sys().appendHashed(busy, h, [Buffer.from('x')], false)).toThrow(TypeError);
    await p;
    closeSync(busy);
    sys().sha256Digest(h);
    expect(() => sys().sha256Update(h, Buffer.from('x'))).toThrow(TypeError);
  });
});

describe('ingest hashing: native and node:crypto give the same blobs', () => {
  let store: Store;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    ({ store, cleanup } = await tempStore());
  });
  afterEach(async () => {
    delete process.env.MYBUILD_NATIVE_HASH;
    await cleanup();
  });

  test('abort while an append is running waits for it: no byte lands in a file opened after', async () => {
    for (let round = 0; round < 20; round++) {
      const w = await store.content.writer(`abort-${round}`, {});
      const s = w.stream();
      s.on('error', () => undefined);
      s.write(randomBytes(8 << 20));
      await w.abort();
      // The fd the ingest had is free again: whatever opens next may get its number.
      const other = join(tmpdir(), `mybuild-after-abort-${process.pid}-${round}`);
      const fd = openSync(other, 'w');
      await new Promise((r) => setTimeout(r, 20));
      closeSync(fd);
      expect(readFileSync(other).length, `round ${round}`).toBe(0);
      await rm(other);
    }
  });

  for (const mode of ['native', 'node:crypto']) {
    test(`${mode}: streamed, resumed after a partial write, and verified against the expected digest`, async () => {
      if (mode === 'node:crypto') process.env.MYBUILD_NATIVE_HASH = '0';
      const data = randomBytes(9 * 1024 * 1024 + 11);
      const w1 = await store.content.writer(`r-${mode}`, { expected: sha256(data), size: data.length });
      await pipeline(Readable.from([data.subarray(0, 3_000_001)]), w1.stream());
      await expect(w1.commit()).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
      const w2 = await store.content.writer(`r-${mode}`, { expected: sha256(data), size: data.length });
      expect(w2.offset).toBe(3_000_001);
      await pipeline(Readable.from([data.subarray(3_000_001, 5_000_000), data.subarray(5_000_000)]), w2.stream());
      expect(await w2.commit()).toEqual({ digest: sha256(data), size: data.length });
      const wrong = await store.content.writer(`bad-${mode}`, {});
      await pipeline(Readable.from([data.subarray(1)]), wrong.stream());
      await expect(wrong.commit({ digest: sha256(data) })).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
    });
  }
});

describe('prefetch', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'mybuild-prefetch-'));
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  test('advises the files it can open, skips missing ones and does not follow symlinks', async () => {
    writeFileSync(join(dir, 'a'), 'a');
    writeFileSync(join(dir, 'b'), randomBytes(100_000));
    symlinkSync(join(dir, 'a'), join(dir, 'link'));
    expect(await sys().prefetch([join(dir, 'a'), join(dir, 'missing'), join(dir, 'b'), join(dir, 'link')])).toBe(2);
    expect(await sys().prefetch([])).toBe(0);
    expect(() => sys().prefetch([`${dir}/a\0b`])).toThrow(TypeError);
    expect(() => sys().prefetch('a' as unknown as string[])).toThrow(TypeError);
  });

  test('reads a whole file into the page cache, beyond the device readahead window one advice covers', async (ctx) => {
    const file = join(dir, 'big');
    const fd = openSync(file, 'w');
    const chunk = randomBytes(1 << 20);
    for (let i = 0; i < 24; i++) writeSync(fd, chunk);
    fsyncSync(fd);
    closeSync(fd);
    // fincore: "RES PAGES SIZE FILE" in bytes; GNU dd's iflag=nocache drops the (clean) file from the cache
    const resident = () => Number(execFileSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', file], { encoding: 'utf8' }).trim());
    execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
    if (resident() >= 1 << 20) ctx.skip(); // a file system whose pages cannot be dropped (tmpfs): nothing to see
    expect(await sys().prefetch([file])).toBe(1);
    const deadline = Date.now() + 10_000;
    while (resident() < 24 << 20 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    expect(resident()).toBe(24 << 20);
  });
});

describe('sha256 and random bytes for every package, from the addon', () => {
  test('createHash("sha256") hashes on the addon exactly as node:crypto does, for strings, buffers and views', () => {
    // importing the store registers the addon with @mybuild/oci
    const h = ociCreateHash('sha256');
    expect(h.constructor.name).toBe('NativeSha256Hash');
    const big = randomBytes(5 << 20);
    const backing = Buffer.concat([Buffer.from('xx'), big, Buffer.from('yy')]);
    const view = new Uint8Array(backing.buffer, backing.byteOffset + 2, big.length);
    const inputs: [string | Uint8Array, BufferEncoding?][] = [['héllo'], ['68656c6c6f', 'hex'], [big], [view], [new Uint8Array(0)], ['']];
    for (const [data, enc] of inputs) {
      const want = createHash('sha256').update(typeof data === 'string' ? Buffer.from(data, enc) : data);
      const got = ociCreateHash('sha256').update(data, enc);
      expect(got.digest('hex')).toBe(want.copy().digest('hex'));
    }
    const both = ociCreateHash('sha256').update('a').update(Buffer.from('b'));
    expect(both.digest('base64')).toBe(createHash('sha256').update('ab').digest('base64'));
    expect(ociCreateHash('sha256').update('ab').digest()).toEqual(createHash('sha256').update('ab').digest());
    const done = ociCreateHash('sha256');
    done.digest('hex');
    expect(() => done.update('more')).toThrow(/finished/);
    expect(sha256Of('abc')).toBe('sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  test('randomBytes comes from getrandom(2): the size asked, never the same twice', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 64; i++) {
      const b = ociRandomBytes(12);
      expect(b.length).toBe(12);
      seen.add(b.toString('hex'));
    }
    expect(seen.size).toBe(64);
    expect(sys().randomBytes(256).length).toBe(256);
    expect(() => sys().randomBytes(0)).toThrow(TypeError);
    expect(() => sys().randomBytes(257)).toThrow(TypeError);
    expect(ociRandomBytes(1000).length).toBe(1000); // more than the addon gives at once: node:crypto's
  });
});
