import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { chmod, readdir, readFile, rm, stat, utimes, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Digest, MediaType, isNotFound } from '@mybuild/oci';
import { contentBlobSink, putJsonBlob, type Store } from '@mybuild/layer-store';
import { blobNames, drain, fileDigest, pattern, rejection, sha256, tempStore } from './helpers-store.js';

let store: Store;
let root: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ store, root, cleanup } = await tempStore());
});
afterEach(async () => cleanup());

/** A stream of `data` in `chunk`-sized pieces, pausing `delayMs` between them. */
function slowStream(data: Buffer, chunk: number, delayMs = 0): Readable {
  return Readable.from(
    (async function* () {
      for (let i = 0; i < data.length; i += chunk) {
        if (delayMs) await sleep(delayMs);
        yield data.subarray(i, i + chunk);
      }
    })(),
    { objectMode: false },
  );
}

describe('writer and commit', () => {
  test('nothing is visible under blobs/ before commit; after it the blob is read-only and readable', async () => {
    const data = pattern(3 * 1024 * 1024 + 17);
    const w = await store.content.writer('layer-1', { expected: sha256(data), size: data.length });
    expect(w.offset).toBe(0);
    const s = w.stream();
    await new Promise<void>((resolve, reject) => s.write(data.subarray(0, 1_000_000), (err) => (err ? reject(err) : resolve())));
    expect(await blobNames(root)).toEqual([]);
    expect(await store.content.has(sha256(data))).toBe(false);
    const [ingest] = await store.content.ingests();
    expect(ingest?.ref).toBe('layer-1');
    expect(ingest?.offset).toBe(1_000_000);
    await pipeline(Readable.from([data.subarray(1_000_000)], { objectMode: false }), s, { end: true });
    expect(await blobNames(root)).toEqual([]); // written, not committed
    const info = await w.commit();
    expect(info).toEqual({ digest: sha256(data), size: data.length });
    expect(await blobNames(root)).toEqual([sha256(data).slice(7)]);
    const st = await stat(store.content.path(info.digest));
    expect(st.mode & 0o777).toBe(0o444);
    expect(await fileDigest(store.content.path(info.digest))).toBe(info.digest);
    expect(await readdir(store.paths.ingest)).toEqual([]);
    expect(Buffer.compare(await drain(await store.content.read(info.digest, { verify: true })), data)).toBe(0);
  });

  test('a wrong digest is refused and leaves nothing in blobs/ nor ingest/', async () => {
    const data = pattern(100_000);
    const wrong = sha256('something else');
    const w = await store.content.writer('bad-digest');
    await pipeline(Readable.from([data], { objectMode: false }), w.stream());
    const err = await rejection(w.commit({ digest: wrong }));
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(err.oneLine()).toContain(wrong);
    expect(await blobNames(root)).toEqual([]);
    expect(await readdir(store.paths.ingest)).toEqual([]);
    // the writer is done for
    expect((await rejection(w.commit())).code).toBe('FAILED_PRECONDITION');
  });

  test('a size larger than expected is refused; put() with a wrong size too', async () => {
    const data = pattern(5000);
    const w = await store.content.writer('too-big');
    await pipeline(Readable.from([data], { objectMode: false }), w.stream());
    expect((await rejection(w.commit({ size: 4999 }))).code).toBe('SIZE_EXCEEDED');
    expect(await blobNames(root)).toEqual([]);

    expect((await rejection(store.content.put(Readable.from([data], { objectMode: false }), { size: 4000 }))).code).toBe('SIZE_EXCEEDED');
    expect((await rejection(store.content.put(Readable.from([data], { objectMode: false }), { digest: sha256('x') }))).code).toBe('DIGEST_MISMATCH');
    expect(await blobNames(root)).toEqual([]);
    expect(await readdir(store.paths.ingest)).toEqual([]);
  });

  test('commit before the stream ended is refused', async () => {
    const w = await store.content.writer('early');
    const s = w.stream();
    s.write(pattern(10));
    expect((await rejection(w.commit())).code).toBe('FAILED_PRECONDITION');
    await w.abort();
    expect(await readdir(store.paths.ingest)).toEqual([]);
  });

  test('an interrupted ingest resumes from its offset and re-hashes what is there', async () => {
    const data = pattern(6 * 1024 * 1024 + 3, 7);
    const digest = sha256(data);
    const cut = 2 * 1024 * 1024 + 11;
    const w1 = await store.content.writer('resume-me', { expected: digest, size: data.length });
    await pipeline(Readable.from([data.subarray(0, cut)], { objectMode: false }), w1.stream());
    // too short: commit keeps the ingest for a later resume
    const short = await rejection(w1.commit());
    expect(short.code).toBe('FAILED_PRECONDITION');
    expect(await blobNames(root)).toEqual([]);
    const [status] = await store.content.ingests();
    expect(status).toMatchObject({ ref: 'resume-me', offset: cut });

    const w2 = await store.content.writer('resume-me', { expected: digest, size: data.length });
    expect(w2.offset).toBe(cut);
    await pipeline(slowStream(data.subarray(cut), 256 * 1024), w2.stream());
    expect(await w2.commit()).toEqual({ digest, size: data.length });
    expect(await fileDigest(store.content.path(digest))).toBe(digest);
    expect(await store.content.ingests()).toEqual([]);
  });

  test('resuming over damaged partial data fails at commit instead of storing a bad blob', async () => {
    const data = pattern(300_000, 3);
    const digest = sha256(data);
    const w1 = await store.content.writer('damaged', { expected: digest });
    await pipeline(Readable.from([data.subarray(0, 100_000)], { objectMode: false }), w1.stream());
    await w1.close();
    const [dir] = await readdir(store.paths.ingest);
    const partial = join(store.paths.ingest, dir!, 'data');
    const bytes = await readFile(partial);
    bytes[500] = bytes[500]! ^ 0xff;
    await writeFile(partial, bytes);
    const w2 = await store.content.writer('damaged', { expected: digest });
    expect(w2.offset).toBe(100_000);
    await pipeline(Readable.from([data.subarray(100_000)], { objectMode: false }), w2.stream());
    expect((await rejection(w2.commit())).code).toBe('DIGEST_MISMATCH');
    expect(await blobNames(root)).toEqual([]);
    // put() never resumes: it starts over and succeeds
    expect((await store.content.put(Readable.from([data], { objectMode: false }), { digest })).digest).toBe(digest);
  });

  test('a second writer on a held ingest waits, or fails with LOCKED when told not to wait', async () => {
    const w1 = await store.content.writer('held');
    expect((await rejection(store.content.writer('held', { noWait: true }))).code).toBe('LOCKED');
    let got = false;
    const second = store.content.writer('held').then((w) => {
      got = true;
      return w;
    });
    await sleep(100);
    expect(got).toBe(false);
    await pipeline(Readable.from([Buffer.from('abc')], { objectMode: false }), w1.stream());
    await w1.commit();
    const w2 = await second;
    expect(w2.offset).toBe(0); // the first one committed and dropped the ingest
    await w2.abort();
  });
});

describe('put', () => {
  test('put of a present blob destroys the input without reading it', async () => {
    const data = pattern(4096);
    const info = await store.content.putBytes(data);
    let reads = 0;
    const input = new Readable({
      read() {
        reads++;
        this.push(data);
        this.push(null);
      },
    });
    expect(await store.content.put(input, { digest: info.digest })).toEqual(info);
    expect(input.destroyed).toBe(true);
    expect(reads).toBe(0);
  });

  test('two concurrent puts of the same blob store it once, both succeed', async () => {
    const data = pattern(8 * 1024 * 1024, 11);
    const digest = sha256(data);
    const [a, b] = await Promise.all([
      store.content.put(slowStream(data, 512 * 1024, 5), { digest, size: data.length }),
      store.content.put(slowStream(data, 512 * 1024, 5), { digest, size: data.length }),
    ]);
    expect(a).toEqual({ digest, size: data.length });
    expect(b).toEqual(a);
    expect(await blobNames(root)).toEqual([digest.slice(7)]);
    expect(await fileDigest(store.content.path(digest))).toBe(digest);
    expect(await readdir(store.paths.ingest)).toEqual([]);
  });

  test('concurrent puts without a digest use separate ingests', async () => {
    const datas = [1, 2, 3, 4, 5].map((seed) => pattern(700_000 + seed, seed));
    const infos = await Promise.all(datas.map((d) => store.content.put(slowStream(d, 64 * 1024, 1))));
    expect(infos.map((i) => i.digest)).toEqual(datas.map((d) => sha256(d)));
    for (const i of infos) expect(await fileDigest(store.content.path(i.digest))).toBe(i.digest);
    expect(await readdir(store.paths.ingest)).toEqual([]);
  });

  test('a failing input stream leaves no blob and no ingest', async () => {
    const input = Readable.from(
      (async function* () {
        yield pattern(100_000);
        throw new Error('network went away');
      })(),
      { objectMode: false },
    );
    await expect(store.content.put(input, { digest: sha256('whatever') })).rejects.toThrow('network went away');
    expect(await blobNames(root)).toEqual([]);
    expect(await readdir(store.paths.ingest)).toEqual([]);
  });

  test('putBytes checks the expected digest; putJsonBlob names exactly the bytes it stored', async () => {
    expect((await rejection(store.content.putBytes(Buffer.from('a'), sha256('b')))).code).toBe('DIGEST_MISMATCH');
    const value = { schemaVersion: 2, hello: 'wörld' };
    const desc = await putJsonBlob(store.content, value, MediaType.OciConfig);
    const bytes = Buffer.from(JSON.stringify(value));
    expect(desc).toEqual({ mediaType: MediaType.OciConfig, digest: sha256(bytes), size: bytes.length });
    expect(await store.content.readBytes(desc.digest, 1024)).toEqual(bytes);
  });

  test('putBytes without an ingest: read-only blob whatever the umask, no temp file left, racing writers of the same bytes, a stale temp pruned', async () => {
    const data = Buffer.from('{"config":"small"}');
    expect((await rejection(store.content.putBytes(data, 'sha1:0123' as Digest))).code).toBe('INVALID_ARGUMENT');
    // no ingest is used: with ingest/ not even a directory, putBytes still works
    await rm(store.paths.ingest, { recursive: true });
    await writeFile(store.paths.ingest, 'not a directory');
    const mask = process.umask(0o077);
    let infos;
    try {
      infos = await Promise.all(Array.from({ length: 8 }, () => store.content.putBytes(data)));
    } finally {
      process.umask(mask);
      await rm(store.paths.ingest);
      await mkdir(store.paths.ingest);
    }
    expect(new Set(infos.map((i) => i.digest))).toEqual(new Set([sha256(data)]));
    expect(infos.every((i) => i.size === data.length)).toBe(true);
    const blobDir = join(root, 'blobs', 'sha256');
    expect(await readdir(blobDir)).toEqual([sha256(data).slice('sha256:'.length)]);
    expect((await stat(join(blobDir, sha256(data).slice('sha256:'.length)))).mode & 0o777).toBe(0o444);
    expect(await store.content.readBytes(sha256(data), 1024)).toEqual(data);

    // a crash between write and rename leaves a temp file: list skips it, prune removes it once old
    const hex = sha256(Buffer.from('other')).slice('sha256:'.length);
    const fresh = join(blobDir, `${hex}.0123456789ab.tmp`);
    const stale = join(blobDir, `${hex}.ba9876543210.tmp`);
    await writeFile(fresh, 'partial');
    await writeFile(stale, 'partial');
    await utimes(stale, new Date(Date.now() - 2 * 3600e3), new Date(Date.now() - 2 * 3600e3));
    const listed: string[] = [];
    for await (const b of store.content.list()) listed.push(b.digest);
    expect(listed).toEqual([sha256(data)]);
    await store.prune();
    expect((await readdir(blobDir)).sort()).toEqual([`${hex}.0123456789ab.tmp`]);
  });

  test('the blob sink takes bytes in memory through putBytes, checking size and digest', async () => {
    const sink = contentBlobSink(store.content);
    const data = Buffer.from('{"schemaVersion":2}');
    const desc = { mediaType: MediaType.OciManifest, digest: sha256(data), size: data.length };
    expect((await rejection(sink.putBytes!({ ...desc, size: data.length + 1 }, data))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(sink.putBytes!({ ...desc, digest: sha256(Buffer.from('other')) }, data))).code).toBe('DIGEST_MISMATCH');
    expect(await sink.has(desc.digest)).toBe(false);
    await sink.putBytes!(desc, data);
    expect(await sink.has(desc.digest)).toBe(true);
    expect(await store.content.readBytes(desc.digest, 1024)).toEqual(data);
    expect(await readdir(store.paths.ingest)).toEqual([]);
  });
});

describe('read, list, delete', () => {
  test('read({verify}) detects a blob altered on disk; plain read does not', async () => {
    const data = pattern(2 * 1024 * 1024 + 5, 21);
    const { digest } = await store.content.putBytes(data);
    const path = store.content.path(digest);
    const altered = Buffer.from(data);
    altered[1_500_000] = altered[1_500_000]! ^ 1;
    await chmod(path, 0o644);
    await writeFile(path, altered);
    await chmod(path, 0o444);

    expect((await drain(await store.content.read(digest))).length).toBe(data.length);
    const err = await rejection(drain(await store.content.read(digest, { verify: true })));
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect((await rejection(drain(await store.content.read(digest, { verify: true, start: 1_000_000 })))).code).toBe('DIGEST_MISMATCH');
    expect((await rejection(store.content.readBytes(digest, 4 << 20))).code).toBe('DIGEST_MISMATCH');
  });

  test('read from an offset returns the tail, verified', async () => {
    const data = pattern(1_234_567, 5);
    const { digest } = await store.content.putBytes(data);
    const tail = await drain(await store.content.read(digest, { verify: true, start: 1_000_000 }));
    expect(Buffer.compare(tail, data.subarray(1_000_000))).toBe(0);
    expect((await drain(await store.content.read(digest, { start: data.length }))).length).toBe(0);
    expect((await rejection(store.content.read(digest, { start: data.length + 1 }))).code).toBe('INVALID_ARGUMENT');
  });

  test('readBytes refuses a blob larger than its cap', async () => {
    const { digest } = await store.content.putBytes(pattern(5000));
    const err = await rejection(store.content.readBytes(digest, 4999));
    expect(err.code).toBe('SIZE_EXCEEDED');
    expect(err.where).toBe(digest);
  });

  test('list yields committed blobs only, skipping junk names', async () => {
    const a = await store.content.putBytes(Buffer.from('a'));
    const b = await store.content.putBytes(Buffer.from('bb'));
    await writeFile(join(store.paths.blobs, 'not-a-digest'), 'x');
    await writeFile(join(store.paths.blobs, `${'0'.repeat(64)}.tmp`), 'x');
    await mkdir(join(store.paths.blobs, 'f'.repeat(64)));
    const listed = [];
    for await (const i of store.content.list()) listed.push(i);
    expect(listed.sort((x, y) => x.digest.localeCompare(y.digest))).toEqual([a, b].sort((x, y) => x.digest.localeCompare(y.digest)));
  });

  test('delete removes a blob; absent blobs are NOT_FOUND everywhere', async () => {
    const { digest } = await store.content.putBytes(Buffer.from('gone soon'));
    await store.content.delete(digest);
    expect(await store.content.has(digest)).toBe(false);
    for (const op of [() => store.content.delete(digest), () => store.content.info(digest), () => store.content.read(digest), () => store.content.readBytes(digest, 100)]) {
      const err = await rejection(op());
      expect(isNotFound(err)).toBe(true);
      expect(err.where).toBe(digest);
    }
  });

  test('sha512 blobs are stored under blobs/sha512', async () => {
    const data = Buffer.from('sha512 please');
    const { createHash } = await import('node:crypto');
    const digest = `sha512:${createHash('sha512').update(data).digest('hex')}` as Digest;
    const info = await store.content.putBytes(data, digest);
    expect(info.digest).toBe(digest);
    expect(store.content.path(digest)).toBe(join(root, 'blobs', 'sha512', digest.slice(7)));
    expect(await drain(await store.content.read(digest, { verify: true }))).toEqual(data);
  });
});
