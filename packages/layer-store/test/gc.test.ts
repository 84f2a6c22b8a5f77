import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { link, mkdir, readdir, readFile, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Digest, MediaType, digestHex, sha256Of } from '@mybuild/oci';
import { chainIds, du, prune, putJsonBlob, withImportLease, type Store } from '@mybuild/layer-store';
import { blobNames, dirSnapshots, makeImage, makeIndex, pattern, rawTag, rejection, tempStore } from './helpers-store.js';

let store: Store;
let root: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ store, root, cleanup } = await tempStore());
});
afterEach(async () => cleanup());

const hexes = (...ds: Digest[]) => ds.map(digestHex).sort();

describe('prune', () => {
  test('keeps what index.json reaches (through indexes), removes the rest, and counts bytes', async () => {
    const a = await makeImage(store, { layers: [pattern(1000, 1), pattern(2000, 2)], label: 'a' });
    const b = await makeImage(store, { layers: [pattern(1000, 1), pattern(3000, 3)], label: 'b', platform: { os: 'linux', architecture: 'arm64' } });
    const index = await makeIndex(store, [{ ...b.manifest, platform: { os: 'linux', architecture: 'arm64' } }, { mediaType: MediaType.OciManifest, digest: sha256Of('never pulled'), size: 10, platform: { os: 'linux', architecture: 's390x' } }]);
    const gone = await makeImage(store, { layers: [pattern(5000, 5)], label: 'gone' });
    const loose = await store.content.putBytes(pattern(777, 9));
    await store.images.tag('a:1', a.manifest);
    await store.images.tag('multi:1', index);
    await store.images.add(a.manifest); // no-op: already tagged

    const r = await prune(store);
    const kept = hexes(a.manifest.digest, a.config.digest, ...a.layers.map((l) => l.digest), index.digest, b.manifest.digest, b.config.digest, ...b.layers.map((l) => l.digest));
    expect(await blobNames(root)).toEqual([...new Set(kept)].sort());
    expect(r.blobsRemoved).toBe(3 + 1); // gone: manifest, config, layer; plus the loose blob
    expect(r.blobBytesFreed).toBe(gone.manifest.size + gone.config.size + 5000 + loose.size);
    expect(r.blobsKept).toBe(new Set(kept).size);
    expect(r.bytesFreed).toBe(r.blobBytesFreed + r.ingestBytesFreed);
    // still resolvable after prune
    expect((await store.images.resolve('multi:1', { platform: 'linux/arm64' })).id).toBe(b.config.digest);
    expect((await store.images.resolve('a:1')).id).toBe(a.config.digest);
    // a second prune finds nothing
    expect((await prune(store)).blobsRemoved).toBe(0);
  });

  test('an untagged image is removed by prune; extra roots keep blobs alive', async () => {
    const a = await makeImage(store, { layers: [pattern(100, 1)], label: 'a' });
    const cached = await store.content.putBytes(pattern(100, 2));
    const cachedImage = await makeImage(store, { layers: [pattern(100, 3)], label: 'cached' });
    await store.images.tag('a:1', a.manifest);
    await store.images.untag('a:1');
    const r = await prune(store, { extraRoots: async () => [cached.digest, cachedImage.manifest.digest] });
    expect(r.blobsRemoved).toBe(3);
    expect(await blobNames(root)).toEqual(hexes(cached.digest, cachedImage.manifest.digest, cachedImage.config.digest, cachedImage.layers[0]!.digest));
  });

  test('removes ingests no process holds; keeps a live one and, with a max age, young ones', async () => {
    const stale = await store.content.writer('stale-download');
    await pipeline(Readable.from([pattern(50_000)], { objectMode: false }), stale.stream());
    await stale.close(); // like a process that died mid-download
    const young = await store.content.writer('young-download');
    await pipeline(Readable.from([pattern(10)], { objectMode: false }), young.stream());
    await young.close();
    const live = await store.content.writer('live-download');
    const s = live.stream();
    await new Promise<void>((resolve, reject) => s.write(pattern(20_000), (err) => (err ? reject(err) : resolve())));
    // age the stale one by an hour
    const refOf = async (d: string) => readFile(join(store.paths.ingest, d, 'ref'), 'utf8');
    for (const d of await readdir(store.paths.ingest)) {
      if ((await refOf(d)) === 'stale-download') {
        const old = new Date(Date.now() - 3600_000);
        await utimes(join(store.paths.ingest, d, 'data'), old, old);
      }
    }

    const r1 = await prune(store, { ingestMaxAgeMs: 60_000 });
    expect(r1.ingestsRemoved).toBe(1);
    expect(r1.ingestBytesFreed).toBeGreaterThanOrEqual(50_000);
    expect((await store.content.ingests()).map((i) => i.ref).sort()).toEqual(['live-download', 'young-download']);

    const r2 = await prune(store);
    expect(r2.ingestsRemoved).toBe(1);
    expect((await store.content.ingests()).map((i) => i.ref)).toEqual(['live-download']);

    // the live writer is unharmed and commits
    await new Promise<void>((resolve) => s.end(resolve));
    const info = await live.commit();
    expect(info.size).toBe(20_000);
    expect(await readdir(store.paths.ingest)).toEqual([]);
  });

  test('waits for an import lease: blobs committed before the tag survive a concurrent prune', async () => {
    let pruned = false;
    let pruning: Promise<unknown> | undefined;
    const img = await withImportLease(store.paths, async () => {
      const i = await makeImage(store, { layers: [pattern(4000, 4)] });
      pruning = prune(store).then((r) => {
        pruned = true;
        return r;
      });
      await sleep(300);
      expect(pruned).toBe(false); // prune waits for the lease
      await store.images.tag('leased:1', i.manifest);
      return i;
    });
    const r = (await pruning) as Awaited<ReturnType<typeof prune>>;
    expect(r.blobsRemoved).toBe(0);
    expect((await store.images.resolve('leased:1')).id).toBe(img.config.digest);
    expect(await store.content.has(img.layers[0]!.digest)).toBe(true);
  });

  test('a present but unreadable manifest stops prune before anything is deleted', async () => {
    const junk = await store.content.putBytes(pattern(100, 8));
    const bad = await store.content.putBytes(Buffer.from('{ not json'));
    await rawTag(root, 'bad:1', { mediaType: MediaType.OciManifest, digest: bad.digest, size: bad.size });
    const err = await rejection(prune(store));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.where).toBe(bad.digest);
    expect(await store.content.has(junk.digest)).toBe(true);
  });

  test('also removes index.json temp files left by a crashed writer', async () => {
    await writeFile(join(root, 'index.json.abcdef012345.tmp'), '{');
    await prune(store);
    expect((await readdir(root)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  test('snapshots: keeps the chain IDs of reachable images, active ones and their parents', async () => {
    const l1 = pattern(100, 1);
    const l2 = pattern(100, 2);
    const l3 = pattern(100, 3);
    const kept = await makeImage(store, { layers: [l1, l2], label: 'kept' });
    const dropped = await makeImage(store, { layers: [l1, l3], label: 'dropped' });
    await store.images.tag('kept:1', kept.manifest);
    const [k1, k2] = chainIds(kept.diffIds);
    const [, d2] = chainIds(dropped.diffIds);
    expect(k1).toBe(kept.diffIds[0]);
    expect(k2).toBe(sha256Of(`${kept.diffIds[0]} ${kept.diffIds[1]}`));
    const snaps = dirSnapshots(store.paths);
    await snaps.create(k1!, 'committed');
    await snaps.create(k2!, 'committed', k1);
    await snaps.create(d2!, 'committed', k1, 8192); // only the dropped image needed it
    const orphanBase = sha256Of('orphan base');
    await snaps.create(orphanBase, 'committed', undefined, 4096);
    await snaps.create(sha256Of('orphan child'), 'committed', orphanBase);
    await snaps.create('build-123-active', 'active', orphanBase.replace('sha256:', 'x')); // parent unknown
    const activeParent = sha256Of('parent of active');
    await snaps.create(activeParent, 'committed');
    await snaps.create('build-456-active', 'active', activeParent);

    const r = await prune(store, { snapshots: snaps });
    const left = (await snaps.list()).map((x) => x.name).sort();
    expect(left).toEqual([k1!, k2!, activeParent, 'build-123-active', 'build-456-active'].sort());
    expect(r.snapshotsRemoved).toBe(3);
    expect(r.snapshotBytesFreed).toBeGreaterThanOrEqual(8192 + 4096);
    expect(r.bytesFreed).toBe(r.blobBytesFreed + r.ingestBytesFreed + r.snapshotBytesFreed);
  });

  test('store.prune() reports through the Store object', async () => {
    await store.content.putBytes(pattern(10));
    const r = await store.prune();
    expect(r).toMatchObject({ blobsRemoved: 1, ingestsRemoved: 0, snapshotsRemoved: 0 });
  });
});

describe('du', () => {
  test('per image size, shared and unique bytes; several tags of one image do not share with themselves', async () => {
    const base = pattern(10_000, 1);
    const a = await makeImage(store, { layers: [base, pattern(3000, 2)], label: 'a' });
    const b = await makeImage(store, { layers: [base, pattern(5000, 3)], label: 'b' });
    const c = await makeImage(store, { layers: [pattern(700, 4)], label: 'c' });
    await store.images.tag('a:1', a.manifest);
    await store.images.tag('a:latest', a.manifest);
    await store.images.tag('b:1', b.manifest);
    await store.images.tag('c:1', c.manifest);
    const loose = await store.content.putBytes(pattern(999, 7));

    const u = await du(store);
    const row = (name: string) => u.images.find((i) => i.name === name)!;
    const sizeA = a.manifest.size + a.config.size + 10_000 + 3000;
    expect(row('a:1')).toMatchObject({ target: a.manifest.digest, id: a.config.digest, sizeBytes: sizeA, sharedBytes: 10_000, uniqueBytes: sizeA - 10_000, blobs: 4 });
    expect(row('a:latest')).toEqual({ ...row('a:1'), name: 'a:latest' });
    expect(row('b:1')).toMatchObject({ sharedBytes: 10_000, uniqueBytes: b.manifest.size + b.config.size + 5000 });
    expect(row('c:1')).toMatchObject({ sharedBytes: 0, uniqueBytes: c.manifest.size + c.config.size + 700 });

    const allBlobs = [a.manifest, a.config, b.manifest, b.config, c.manifest, c.config].reduce((n, d) => n + d.size, 0) + 10_000 + 3000 + 5000 + 700 + loose.size;
    expect(u.blobs).toEqual({ count: 11, bytes: allBlobs, reclaimableCount: 1, reclaimableBytes: loose.size });
    expect(u.ingest).toEqual({ count: 0, bytes: 0 });
    expect(u.totalBytes).toBe(u.blobs.bytes + u.snapshots.bytes + u.cache.bytes + u.ingest.bytes);
  });

  test('an index counts every platform present; its id is undefined', async () => {
    const amd = await makeImage(store, { layers: [pattern(1000, 1)], label: 'amd' });
    const arm = await makeImage(store, { layers: [pattern(2000, 2)], label: 'arm', platform: { os: 'linux', architecture: 'arm64' } });
    const index = await makeIndex(store, [
      { ...amd.manifest, platform: { os: 'linux', architecture: 'amd64' } },
      { ...arm.manifest, platform: { os: 'linux', architecture: 'arm64' } },
    ]);
    await store.images.tag('multi:1', index);
    await store.images.tag('amd:1', amd.manifest);
    const u = await du(store);
    const multi = u.images.find((i) => i.name === 'multi:1')!;
    const amdSize = amd.manifest.size + amd.config.size + 1000;
    expect(multi.id).toBeUndefined();
    expect(multi.sizeBytes).toBe(index.size + amdSize + arm.manifest.size + arm.config.size + 2000);
    expect(multi.sharedBytes).toBe(amdSize);
    expect(u.images.find((i) => i.name === 'amd:1')).toMatchObject({ sharedBytes: amdSize, uniqueBytes: 0 });
  });

  test('snapshots, cache and ingest are measured on disk, hardlinks once', async () => {
    const snapA = join(store.paths.snapshots, 'a', 'fs');
    const snapB = join(store.paths.snapshots, 'b', 'fs');
    await mkdir(snapA, { recursive: true });
    await mkdir(snapB, { recursive: true });
    await writeFile(join(snapA, 'big'), pattern(1 << 20));
    await link(join(snapA, 'big'), join(snapB, 'big-hardlink'));
    await link(join(snapA, 'big'), join(snapA, 'big-again'));
    await writeFile(join(store.paths.cache, 'record.json'), pattern(10_000));
    const w = await store.content.writer('partial');
    await pipeline(Readable.from([pattern(300_000)], { objectMode: false }), w.stream());
    await w.close();

    const u = await du(store);
    expect(u.snapshots.count).toBe(2);
    expect(u.snapshots.bytes).toBeGreaterThanOrEqual(1 << 20);
    expect(u.snapshots.bytes).toBeLessThan(2 * (1 << 20)); // the hardlinks did not count twice
    expect(u.cache.bytes).toBeGreaterThanOrEqual(10_000);
    expect(u.ingest.count).toBe(1);
    expect(u.ingest.bytes).toBeGreaterThanOrEqual(300_000);
    expect((await store.du()).snapshots.bytes).toBe(u.snapshots.bytes);
  });

  test('du tolerates a damaged manifest (reports it as a leaf)', async () => {
    const bad = await store.content.putBytes(Buffer.from('{ nope'));
    await rawTag(root, 'bad:1', { mediaType: MediaType.OciManifest, digest: bad.digest, size: bad.size });
    const img = await putJsonBlob(store.content, { schemaVersion: 2 }, MediaType.OciIndex);
    await store.images.tag('emptyish:1', img);
    const u = await du(store);
    expect(u.images.find((i) => i.name === 'bad:1')).toMatchObject({ sizeBytes: bad.size, blobs: 1 });
  });
});
