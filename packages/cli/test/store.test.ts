import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import { createWriteStream } from 'node:fs';
import { CLI, TEST_XDG_CACHE, cli, ok, run, tempDir } from './helpers.js';
import { makeUmociImages, skopeoCopy, skopeoInspect } from './images.js';
import { describeTree } from './tree.js';

let t: { dir: string; cleanup: () => Promise<void> };
let layout: string;
let fullDocker: string;
let fullOci: string;
let otherDocker: string;

beforeAll(async () => {
  t = await tempDir();
  ({ layout } = await makeUmociImages(t.dir, 4));
  fullDocker = join(t.dir, 'full-docker.tar');
  fullOci = join(t.dir, 'full-oci.tar');
  otherDocker = join(t.dir, 'other-docker.tar');
  await skopeoCopy(`oci:${layout}:full`, `docker-archive:${fullDocker}:busy:full`);
  await skopeoCopy(`oci:${layout}:full`, `oci-archive:${fullOci}:busy:full`);
  await skopeoCopy(`oci:${layout}:other`, `docker-archive:${otherDocker}:busy:other`);
});
afterAll(async () => t?.cleanup());

/** Every blob's content hashes to its name. */
function verifyBlobs(root: string): number {
  const dir = join(root, 'blobs', 'sha256');
  let n = 0;
  for (const name of readdirSync(dir)) {
    const hex = createHash('sha256').update(readFileSync(join(dir, name))).digest('hex');
    expect(hex, `blob ${name}`).toBe(name);
    n++;
  }
  return n;
}

function tags(root: string): string[] {
  const index = JSON.parse(readFileSync(join(root, 'index.json'), 'utf8')) as { manifests: { annotations?: Record<string, string> }[] };
  return index.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name'] ?? '<none>');
}

describe('store interop with skopeo and umoci', () => {
  test('a skopeo docker-archive loads; skopeo and umoci read the store', async () => {
    const root = join(t.dir, 'root-docker');
    const out = await ok(root, ['load', '-i', fullDocker]);
    expect(out).toContain('Loaded image: busy:full');
    const original = await skopeoInspect(`docker-archive:${fullDocker}`);
    const stored = await skopeoInspect(`oci:${root}:busy:full`);
    expect(stored.Layers).toEqual(original.Layers);
    expect(await run('umoci', ['ls', '--layout', root])).toContain('busy:full');
    expect(verifyBlobs(root)).toBeGreaterThanOrEqual(4);

    // save as docker-archive: skopeo reads it, same layer digests
    const saved = join(t.dir, 'resaved-docker.tar');
    await ok(root, ['save', '-o', saved, 'busy:full']);
    const again = await skopeoInspect(`docker-archive:${saved}`);
    expect(again.Layers).toEqual(original.Layers);
    // and it loads back into a fresh store to the same image ID
    const root2 = join(t.dir, 'root-docker2');
    await ok(root2, ['load', '-i', saved]);
    const a = JSON.parse(await ok(root, ['inspect', 'busy:full'])) as { Id: string }[];
    const b = JSON.parse(await ok(root2, ['inspect', 'busy:full'])) as { Id: string }[];
    expect(b[0]!.Id).toBe(a[0]!.Id);
  });

  test('a skopeo oci-archive loads and saves again with the same manifest and layers', async () => {
    const root = join(t.dir, 'root-oci');
    expect(await ok(root, ['load', '-i', fullOci])).toContain('Loaded image: busy:full');
    const original = await skopeoInspect(`oci:${layout}:full`);
    const saved = join(t.dir, 'resaved-oci.tar');
    await ok(root, ['save', '--format', 'oci', '-o', saved, 'busy:full']);
    const again = await skopeoInspect(`oci-archive:${saved}:busy:full`);
    expect(again.Layers).toEqual(original.Layers);
    expect(again.Digest).toBe(original.Digest);
  });

  test('a gzip-compressed archive loads', async () => {
    const gz = join(t.dir, 'full-docker.tar.gz');
    await pipeline(createReadStream(fullDocker), createGzip({ level: 1 }), createWriteStream(gz));
    const root = join(t.dir, 'root-gz');
    expect(await ok(root, ['load', '-i', gz])).toContain('Loaded image: busy:full');
  });

  test('unpack gives the same tree as umoci raw unpack', async () => {
    const root = join(t.dir, 'root-oci');
    const mine = join(t.dir, 'unpack-mine');
    const theirs = join(t.dir, 'unpack-umoci');
    await ok(root, ['unpack', 'busy:full', mine]);
    await run('umoci', ['raw', 'unpack', '--image', `${root}:busy:full`, theirs]);
    const a = describeTree(mine);
    const b = describeTree(theirs);
    expect(Object.keys(a).length).toBeGreaterThan(10);
    expect(a['data/suid']?.mode).toBe('4755');
    expect(a['data/null']?.type).toBe('char');
    expect(a['bin/echo']).toBeUndefined();
    expect(a).toEqual(b);
  });

  test('two images sharing a layer store it once; du shows it shared', async () => {
    const root = join(t.dir, 'root-dedup');
    await ok(root, ['load', '-i', fullDocker]);
    const before = readdirSync(join(root, 'blobs', 'sha256')).length;
    await ok(root, ['load', '-i', otherDocker]);
    const after = readdirSync(join(root, 'blobs', 'sha256')).length;
    // other adds its config, its manifest and its own top layer: the base layer is shared
    expect(after - before).toBe(3);
    const du = JSON.parse(await ok(root, ['du', '--format', 'json'])) as { images: { name: string; sharedBytes: number; uniqueBytes: number }[] };
    const base = statSync(join(root, 'blobs', 'sha256', readdirSync(join(root, 'blobs', 'sha256')).sort()[0]!)).size;
    expect(base).toBeGreaterThan(0);
    const full = du.images.find((i) => i.name === 'busy:full');
    const other = du.images.find((i) => i.name === 'busy:other');
    expect(full?.sharedBytes).toBeGreaterThan(0);
    expect(full?.sharedBytes).toBe(other?.sharedBytes);
    expect(full!.uniqueBytes).toBeGreaterThan(4 * 1024 * 1024);
  });
});

describe('bad input', () => {
  test('garbage, truncated and inconsistent archives: one line, non-zero, store unchanged', async () => {
    const root = join(t.dir, 'root-bad');
    await ok(root, ['load', '-i', otherDocker]);
    const blobsBefore = readdirSync(join(root, 'blobs', 'sha256')).sort();
    const indexBefore = readFileSync(join(root, 'index.json'), 'utf8');

    const garbage = join(t.dir, 'garbage.tar');
    writeFileSync(garbage, 'this is not a tar archive at all\n'.repeat(100));
    const truncated = join(t.dir, 'truncated.tar');
    writeFileSync(truncated, readFileSync(fullDocker).subarray(0, 3 * 1024 * 1024 + 100));
    for (const f of [garbage, truncated, join(t.dir, 'missing.tar')]) {
      const r = await cli(root, ['load', '-i', f], { env: { MYBUILD_PROGRESS: 'quiet' } });
      expect(r.code, f).not.toBe(0);
      expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
      expect(r.stderr).toMatch(/^mybuild: error: /);
    }
    expect(readFileSync(join(root, 'index.json'), 'utf8')).toBe(indexBefore);
    // a truncated archive may have committed whole, verified blobs, never a partial one
    verifyBlobs(root);
    await ok(root, ['prune']);
    expect(readdirSync(join(root, 'blobs', 'sha256')).sort()).toEqual(blobsBefore);

    const r = await cli(root, ['inspect', 'nosuchimage:1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
  });
});

describe('crash safety and concurrency', () => {
  test('SIGKILL in the middle of load leaves no half blob and no tag; the next load succeeds', async () => {
    const big = join(t.dir, 'big');
    const { layout: bigLayout } = await makeUmociImages(big, 300);
    const archive = join(t.dir, 'big-docker.tar');
    await skopeoCopy(`oci:${bigLayout}:full`, `docker-archive:${archive}:big:1`);
    const root = join(t.dir, 'root-crash');
    await ok(root, ['images']);
    const child = spawn(process.execPath, [CLI, '--root', root, 'load', '-i', archive], { stdio: 'ignore', env: { ...process.env, XDG_CACHE_HOME: TEST_XDG_CACHE } });
    // wait until the large layer is being ingested, then kill
    const ingest = join(root, 'ingest');
    const deadline = Date.now() + 30_000;
    let killed = false;
    while (Date.now() < deadline) {
      const sizes = readdirSync(ingest).flatMap((d) => {
        try {
          return [statSync(join(ingest, d, 'data')).size];
        } catch {
          return [];
        }
      });
      if (sizes.some((s) => s > 20 * 1024 * 1024)) {
        child.kill('SIGKILL');
        killed = true;
        break;
      }
      await new Promise((r) => setTimeout(r, 10));
    }
    expect(killed, 'load finished before it could be killed').toBe(true);
    await new Promise((r) => child.once('exit', r));
    expect(tags(root)).toEqual([]);
    verifyBlobs(root);
    expect(await ok(root, ['load', '-i', archive])).toContain('Loaded image: big:1');
    expect(tags(root)).toEqual(['big:1']);
    verifyBlobs(root);
    await ok(root, ['prune']);
    expect(readdirSync(ingest)).toEqual([]);
  }, 180_000);

  test('8 parallel load/tag/rmi processes leave a consistent index and verifiable blobs', async () => {
    const root = join(t.dir, 'root-parallel');
    await ok(root, ['load', '-i', otherDocker]);
    const procs: Promise<unknown>[] = [];
    for (let i = 0; i < 8; i++) {
      procs.push(
        (async () => {
          for (let round = 0; round < 3; round++) {
            await ok(root, ['load', '-i', i % 2 ? fullDocker : otherDocker]);
            await ok(root, ['tag', 'busy:other', `p${i}:r${round}`]);
            if (round > 0) await ok(root, ['rmi', `p${i}:r${round - 1}`]);
          }
        })(),
      );
    }
    await Promise.all(procs);
    const names = tags(root).sort();
    expect(new Set(names).size).toBe(names.length);
    expect(names).toEqual(['busy:full', 'busy:other', ...Array.from({ length: 8 }, (_, i) => `p${i}:r2`)].sort());
    verifyBlobs(root);
    for (const n of names) await ok(root, ['inspect', n]);
  }, 180_000);
});
