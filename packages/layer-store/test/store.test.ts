import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { type ImageIndex, REF_NAME_ANNOTATION } from '@mybuild/oci';
import { openStore, type Snapshotter, type Store } from '@mybuild/layer-store';
import { dirSnapshots, fileDigest, makeImage, pattern, rejection, sha256, tempStore } from './helpers-store.js';

const pkg = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(pkg, 'dist');

/**
 * The cross-process tests run child processes on the compiled package (scripts/test.sh
 * builds first). Fail loudly when the build is missing.
 */
function requireDist(): void {
  for (const mod of ['store', 'content/ContentStore', 'content/json', 'image/ImageStore', 'image/indexFile', 'gc/gc', 'gc/mark']) {
    const js = join(DIST, `${mod}.js`);
    if (!existsSync(js)) throw new Error(`${js} is missing: build first (cd /work/main && npx tsc -b)`);
  }
}

let store: Store;
let root: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ store, root, cleanup } = await tempStore());
});
afterEach(async () => cleanup());

function run(script: string, args: string[]): { child: ChildProcess; done: Promise<string> } {
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout!.on('data', (c: Buffer) => out.push(c));
  child.stderr!.on('data', (c: Buffer) => err.push(c));
  const done = new Promise<string>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve(Buffer.concat(out).toString());
      else reject(new Error(`child ${args.join(' ')} exited ${code ?? signal}: ${Buffer.concat(err).toString()}`));
    });
  });
  return { child, done };
}

const imports = () => `
import { openStore } from ${JSON.stringify(pathToFileURL(join(DIST, 'store.js')).href)};
import { putJsonBlob } from ${JSON.stringify(pathToFileURL(join(DIST, 'content', 'json.js')).href)};
import { Readable } from 'node:stream';
import { randomBytes } from 'node:crypto';
`;

describe('openStore', () => {
  test('creates an OCI image layout once, and reopens it unchanged', async () => {
    expect(JSON.parse(await readFile(join(root, 'oci-layout'), 'utf8'))).toEqual({ imageLayoutVersion: '1.0.0' });
    const index = JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as ImageIndex;
    expect(index).toMatchObject({ schemaVersion: 2, manifests: [] });
    for (const d of ['blobs/sha256', 'ingest', 'snapshots', 'cache', 'locks', 'tmp']) expect(existsSync(join(root, d)), d).toBe(true);
    const { digest } = await store.content.putBytes(Buffer.from('hello'));
    const again = await openStore(root);
    expect(await again.content.has(digest)).toBe(true);
    expect(again.snapshots).toBeUndefined();
    expect(again.paths.root).toBe(root);
  });

  test('builds the snapshotter from its factory; prune and du go through it', async () => {
    let seen: unknown;
    const s = await openStore(root, {
      snapshotter: (paths, content) => {
        seen = { root: paths.root, content };
        // a directory-backed snapshot set standing in for the overlay snapshotter's list/remove/dir
        return dirSnapshots(paths) as unknown as Snapshotter;
      },
    });
    expect(seen).toEqual({ root, content: s.content });
    const snaps = s.snapshots as unknown as ReturnType<typeof dirSnapshots>;
    const img = await makeImage(s, { layers: [pattern(100, 1)] });
    await s.images.tag('app:1', img.manifest);
    await snaps.create(img.diffIds[0]!, 'committed');
    await snaps.create(sha256('unused layer'), 'committed', undefined, 5000);
    expect((await s.du()).snapshots.count).toBe(2);
    const r = await s.prune();
    expect(r).toMatchObject({ snapshotsRemoved: 1, blobsRemoved: 0 });
    expect(r.snapshotBytesFreed).toBeGreaterThanOrEqual(5000);
    expect((await snaps.list()).map((x) => x.name)).toEqual([img.diffIds[0]]);
  });
});

describe('across processes', () => {
  test('8 processes tagging, untagging, putting and pruning leave a consistent store', async () => {
    requireDist();
    const ITER = 12;
    const script = join(root, '..', `${root.split('/').pop()}-child.mjs`);
    await writeFile(
      script,
      `${imports()}
const [root, k] = process.argv.slice(2);
const store = await openStore(root);
// every child puts the same 4 MiB blob: concurrent writers of one ingest
const shared = Buffer.alloc(4 << 20);
for (let i = 0; i < shared.length; i += 4) shared.writeUInt32LE((i * 2654435761) >>> 0, i);
const { createHash } = await import('node:crypto');
const sharedDigest = 'sha256:' + createHash('sha256').update(shared).digest('hex');
const out = {};
for (let i = 0; i < ${ITER}; i++) {
  await store.withImportLease(async () => {
    const chunks = [];
    for (let o = 0; o < shared.length; o += 256 << 10) chunks.push(shared.subarray(o, o + (256 << 10)));
    const s = await store.content.put(Readable.from(chunks, { objectMode: false }), { digest: sharedDigest, size: shared.length });
    const own = await store.content.putBytes(randomBytes(10000 + i));
    const layers = [
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: s.digest, size: s.size },
      { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: own.digest, size: own.size },
    ];
    const config = await putJsonBlob(store.content, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } }, 'application/vnd.oci.image.config.v1+json');
    const manifest = await putJsonBlob(store.content, { schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers }, 'application/vnd.oci.image.manifest.v1+json');
    await store.images.tag('c' + k + ':t' + (i % 3), manifest);
    await store.images.tag('common:latest', manifest);
    if (i % 3 === 2) await store.images.untag('c' + k + ':t0');
    out['t' + (i % 3)] = manifest.digest;
    if (i === ${ITER - 1}) {
      await store.images.tag('c' + k + ':final', manifest);
      out.final = manifest.digest;
    }
  });
  if (i % 4 === 3) await store.prune();
}
process.stdout.write(JSON.stringify(out));
`,
    );
    try {
      const children = Array.from({ length: 8 }, (_, k) => run(script, [root, String(k)]));
      const results = (await Promise.all(children.map((c) => c.done))).map((s) => JSON.parse(s) as Record<string, string>);

      const index = JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as ImageIndex;
      const names = index.manifests.map((d) => d.annotations?.[REF_NAME_ANNOTATION] ?? '<untagged>');
      expect(new Set(names).size).toBe(names.length);
      const expected = ['common:latest', ...results.flatMap((_, k) => [`c${k}:t1`, `c${k}:t2`, `c${k}:final`])];
      expect(names.sort()).toEqual(expected.sort());
      for (const [k, r] of results.entries()) {
        expect((await store.images.resolve(`c${k}:final`)).manifestDescriptor.digest).toBe(r.final);
        expect((await store.images.resolve(`c${k}:t1`)).manifestDescriptor.digest).toBe(r.t1);
        expect((await store.images.resolve(`c${k}:t2`)).manifestDescriptor.digest).toBe(r.t2);
      }
      // nothing a tag needs was pruned away
      for (const name of names) {
        const img = await store.images.resolve(name);
        for (const l of img.manifest.layers) expect(await store.content.has(l.digest), `${name} layer ${l.digest}`).toBe(true);
      }
      // every blob is what its name says
      const blobs = await readdir(join(root, 'blobs', 'sha256'));
      expect(blobs.length).toBeGreaterThan(8 * 3);
      for (const b of blobs) expect(await fileDigest(join(root, 'blobs', 'sha256', b))).toBe(`sha256:${b}`);
      expect(await readdir(store.paths.ingest)).toEqual([]);
      // one more prune in this process: the remaining store is exactly what the tags reach
      await store.prune();
      for (const name of names) await store.images.resolve(name);
    } finally {
      await (await import('node:fs/promises')).rm(script, { force: true });
    }
  }, 60_000);

  test('an ingest held by a live process is kept; after SIGKILL it resumes where the process stopped', async () => {
    requireDist();
    const data = pattern(6 << 20, 99);
    const digest = sha256(data);
    const half = 3 << 20;
    const script = join(root, '..', `${root.split('/').pop()}-killme.mjs`);
    const first = join(root, '..', `${root.split('/').pop()}-first-half`);
    await writeFile(first, data.subarray(0, half));
    await writeFile(
      script,
      `${imports()}
import { readFileSync } from 'node:fs';
const [root, ref, file] = process.argv.slice(2);
const store = await openStore(root);
const w = await store.content.writer(ref);
const s = w.stream();
await new Promise((resolve, reject) => s.write(readFileSync(file), (e) => (e ? reject(e) : resolve())));
process.stdout.write('ready\\n');
// Hold the ingest until killed. The timer keeps the writer reachable: a writer nothing refers to
// is garbage, and Node closes a collected FileHandle's fd — the lock's too, which let prune take it.
setInterval(() => void [w, s], 1000);
`,
    );
    try {
      const { child, done } = run(script, [root, 'killed-download', first]);
      done.catch(() => {});
      await new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (c: Buffer) => c.toString().includes('ready') && resolve());
        child.on('close', () => reject(new Error('child ended before it was ready')));
      });
      // alive: the ingest is locked, prune keeps it
      expect((await rejection(store.content.writer('killed-download', { noWait: true }))).code).toBe('LOCKED');
      const before = await readdir(store.paths.ingest);
      const pruned = await store.prune();
      expect(pruned.ingestsRemoved, `ingests before ${before.join(',')}, after ${(await readdir(store.paths.ingest)).join(',')}, locks ${(await readdir(store.paths.locks)).join(',')}`).toBe(0);
      expect((await store.content.ingests())[0]).toMatchObject({ ref: 'killed-download', offset: half });

      child.kill('SIGKILL');
      await new Promise((r) => child.once('close', r));
      const w = await store.content.writer('killed-download', { expected: digest, size: data.length });
      expect(w.offset).toBe(half);
      await pipeline(Readable.from([data.subarray(half)], { objectMode: false }), w.stream());
      expect(await w.commit()).toEqual({ digest, size: data.length });
      expect(await fileDigest(store.content.path(digest))).toBe(digest);
    } finally {
      const { rm } = await import('node:fs/promises');
      await rm(script, { force: true });
      await rm(first, { force: true });
    }
  });
});
