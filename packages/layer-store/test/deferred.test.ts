/**
 * Deferred blobs: a build's uncompressed layer recorded as its committed snapshot and made
 * again (checked) whenever it is read.
 */
import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { mkdirSync, readdirSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { type Digest, MediaType } from '@mybuild/oci';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { OverlaySnapshotter, type Store, chainId, hashLayer, openStore, prune, putJsonBlob, sys, writeLayer } from '@mybuild/layer-store';
import { drain, pattern, rejection, sha256, tempStore } from './helpers-store.js';

describe('deferred blobs', () => {
  let store: Store;
  let root: string;
  let cleanup: () => Promise<void>;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'mybuild-deferred-'));
    store = await openStore(root, { snapshotter: (paths) => new OverlaySnapshotter(paths) });
    cleanup = () => rm(root, { recursive: true, force: true });
  });
  afterEach(async () => cleanup());

  /** A committed snapshot (no parent) holding a few files, and its layer recorded as deferred. */
  async function deferredLayer(key = 'build-1'): Promise<{ digest: Digest; size: number; chain: string; fs: string }> {
    const sn = store.snapshots!;
    await sn.prepare(key);
    const upper = sn.dir(key);
    mkdirSync(join(upper, 'etc', 'app'), { recursive: true });
    writeFileSync(join(upper, 'etc', 'app', 'conf'), 'a=1\n');
    writeFileSync(join(upper, 'big'), pattern(3 * 1024 * 1024 + 17));
    symlinkSync('etc/app/conf', join(upper, 'link'));
    const h = await hashLayer(upper, { mode: 'plain' });
    const chain = chainId([h.diffId])!;
    await sn.commit(chain, key);
    const info = await store.content.putDeferred!({ digest: h.diffId, size: h.size, snapshot: chain, mode: 'plain' });
    expect(info).toEqual({ digest: h.diffId, size: h.size, deferredFrom: chain });
    return { digest: h.diffId, size: h.size, chain, fs: join(root, 'snapshots', chain.slice(7), 'fs') };
  }

  test('hashLayer gives writeLayer’s digest and size, with the native hash and with node:crypto', async () => {
    const { fs } = await deferredLayer();
    const written = await writeLayer(fs, { mode: 'plain', store: store.content, compression: 'none' });
    const saved = process.env.MYBUILD_NATIVE_HASH;
    try {
      for (const native of ['1', '0']) {
        process.env.MYBUILD_NATIVE_HASH = native;
        // a small chunk size: many hash calls in flight, chunks put back and reused
        for (const chunkSize of [undefined, 4096]) {
          const h = await hashLayer(fs, { mode: 'plain', ...(chunkSize ? { chunkSize } : {}) });
          expect({ digest: h.diffId, size: h.size, entries: h.entries }).toEqual({ digest: written.diffId, size: written.uncompressedSize, entries: written.entries });
        }
      }
    } finally {
      if (saved === undefined) delete process.env.MYBUILD_NATIVE_HASH;
      else process.env.MYBUILD_NATIVE_HASH = saved;
    }
  });

  test('is listed, known and read like a blob: the same bytes writeLayer stores, from any offset', async () => {
    const d = await deferredLayer();
    expect(readdirSync(join(root, 'blobs', 'sha256'))).toEqual([]); // nothing written
    expect(await store.content.has(d.digest)).toBe(true);
    expect(await store.content.info(d.digest)).toEqual({ digest: d.digest, size: d.size, deferredFrom: d.chain });
    const listed = [];
    for await (const b of store.content.list()) listed.push(b);
    expect(listed).toEqual([{ digest: d.digest, size: d.size, deferredFrom: d.chain }]);

    const bytes = await drain(await store.content.read(d.digest));
    expect(bytes.length).toBe(d.size);
    // the blob writeLayer would have stored, in another store
    const other = await tempStore();
    try {
      const w = await writeLayer(d.fs, { mode: 'plain', store: other.store.content, compression: 'none' });
      expect(w.digest).toBe(d.digest);
      expect(bytes.equals(await drain(await other.store.content.read(w.digest)))).toBe(true);
    } finally {
      await other.cleanup();
    }
    const start = 1024 * 1024 + 3;
    expect((await drain(await store.content.read(d.digest, { start, verify: true }))).equals(bytes.subarray(start))).toBe(true);
    expect((await rejection(store.content.read(d.digest, { start: d.size + 1 }))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(store.content.readBytes(d.digest, 1024))).code).toBe('SIZE_EXCEEDED');
    expect((await store.content.readBytes(d.digest, d.size)).equals(bytes)).toBe(true);
  });

  test('a snapshot changed after the fact fails the read with DIGEST_MISMATCH; a missing one with NOT_FOUND', async () => {
    const d = await deferredLayer();
    writeFileSync(join(d.fs, 'etc', 'app', 'conf'), 'a=2\n'); // same size, other content
    const err = await rejection(drain(await store.content.read(d.digest)));
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(err.message).toContain(`snapshot ${d.chain} changed since the build (its tar has digest sha256:`);
    writeFileSync(join(d.fs, 'etc', 'app', 'conf'), `a=${'2'.repeat(600)}\n`); // a tar block more
    expect((await rejection(drain(await store.content.read(d.digest)))).message).toMatch(/changed since the build \(its tar has more than \d+ bytes\)/);
    await store.snapshots!.remove(d.chain);
    const gone = await rejection(store.content.read(d.digest));
    expect(gone.code).toBe('NOT_FOUND');
    expect(gone.message).toContain(d.chain);
  });

  test('a damaged record: reads fail with a clear error, has() and prune treat it as absent, a pull or load writes the blob', async () => {
    const d = await deferredLayer();
    const good = await drain(await store.content.read(d.digest));
    const rec = join(root, 'deferred', 'sha256', d.digest.slice(7));
    writeFileSync(rec, JSON.stringify({ digest: d.digest, size: d.size, snapshot: '../../etc', mode: 'plain' }));
    const err = await rejection(store.content.read(d.digest));
    expect(err.code).toBe('FAILED_PRECONDITION');
    expect(err.message).toMatch(/damaged: bad snapshot/);
    expect(await store.content.has(d.digest)).toBe(false);
    expect((await rejection(store.content.info(d.digest))).code).toBe('NOT_FOUND');
    expect((await store.du()).blobs.count).toBe(1);
    // the same bytes arriving (a pull, a load) are stored as a file
    await store.content.putBytes(good, d.digest);
    expect((await drain(await store.content.read(d.digest))).equals(good)).toBe(true);
    // delete removes the file and the record
    await store.content.delete(d.digest);
    expect(existsSync(rec)).toBe(false);
    expect(await store.content.has(d.digest)).toBe(false);
    expect((await rejection(store.content.delete(d.digest))).code).toBe('NOT_FOUND');
    await expect(store.content.putDeferred!({ digest: d.digest, size: -1, snapshot: d.chain, mode: 'plain' })).rejects.toThrow(/bad size/);
  });

  test('prune keeps the snapshot of a deferred blob an image needs, writes out one only the cache needs, drops an unreachable one', async () => {
    const d = await deferredLayer();
    const record = join(root, 'deferred', 'sha256', d.digest.slice(7));
    const file = join(root, 'blobs', 'sha256', d.digest.slice(7));
    // an image whose config names the layer: its chain's snapshot stays, the blob stays deferred
    const config = await putJsonBlob(store.content, { architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [d.digest] } }, MediaType.OciConfig);
    const manifest = await putJsonBlob(store.content, { schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [{ mediaType: MediaType.OciLayer, digest: d.digest, size: d.size }] }, MediaType.OciManifest);
    const withImage = await prune(store, { extraRoots: async () => [manifest.digest], snapshots: store.snapshots! });
    expect(withImage).toMatchObject({ blobsKept: 3, snapshotsRemoved: 0 });
    expect([existsSync(record), existsSync(file)]).toEqual([true, false]);

    // reachable as a root of its own (as the build cache holds layers), no config names its
    // chain: the blob is written out, the snapshot goes
    const cacheOnly = await prune(store, { extraRoots: async () => [d.digest], snapshots: store.snapshots! });
    expect(cacheOnly).toMatchObject({ blobsKept: 1, snapshotsRemoved: 1 });
    expect([existsSync(record), existsSync(file)]).toEqual([false, true]);
    expect((await drain(await store.content.read(d.digest, { verify: true }))).length).toBe(d.size);

    const swept = await prune(store, { snapshots: store.snapshots! });
    expect(swept.blobsRemoved).toBe(1);
    expect(swept.blobBytesFreed).toBe(d.size);
    expect(await store.content.has(d.digest)).toBe(false);
  });

  test('an unreachable deferred blob frees no bytes of its own; its snapshot goes', async () => {
    const d = await deferredLayer();
    const swept = await prune(store, { snapshots: store.snapshots! });
    expect(swept).toMatchObject({ blobsRemoved: 1, blobBytesFreed: 0, snapshotsRemoved: 1 });
    expect(swept.snapshotBytesFreed).toBeGreaterThan(3 * 1024 * 1024);
    expect(await store.content.has(d.digest)).toBe(false);
  });

  test('materialize writes the file and drops the record', async () => {
    const d = await deferredLayer();
    expect(await store.content.materialize!(d.digest)).toEqual({ digest: d.digest, size: d.size });
    expect(readdirSync(join(root, 'blobs', 'sha256'))).toEqual([d.digest.slice(7)]);
    expect(existsSync(join(root, 'deferred', 'sha256', d.digest.slice(7)))).toBe(false);
    expect(await store.content.materialize!(d.digest)).toEqual({ digest: d.digest, size: d.size });
  });

  test('the addon: sha256UpdateAsync hashes without a file; appendHashed wants an open fd; syncfs', async () => {
    const h = sys().sha256Create()!;
    const data = [pattern(70_000, 3), pattern(5, 4)];
    expect(await sys().sha256UpdateAsync(h, data)).toBe(70_005);
    expect(`sha256:${sys().sha256Digest(h)}`).toBe(sha256(Buffer.concat(data)));
    expect(() => sys().appendHashed(-1, sys().sha256Create()!, data, false)).toThrow(/open file descriptor/);
    await sys().syncfs(root);
    await expect(sys().syncfs(join(root, 'nope'))).rejects.toMatchObject({ code: 'ENOENT', syscall: 'syncfs' });
  });

  test('a blob file written later wins over the record and is listed once', async () => {
    const d = await deferredLayer();
    await writeLayer(d.fs, { mode: 'plain', store: store.content, compression: 'none' });
    const listed = [];
    for await (const b of store.content.list()) listed.push(b);
    expect(listed).toEqual([{ digest: d.digest, size: d.size }]);
    expect(await store.content.info(d.digest)).toEqual({ digest: d.digest, size: d.size });
  });
});
