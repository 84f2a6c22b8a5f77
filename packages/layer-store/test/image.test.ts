import { afterEach, beforeEach, describe, expect, test } from 'vitest';
import { execFile } from 'node:child_process';
import { readFile, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { type Descriptor, type ImageIndex, MediaType, REF_NAME_ANNOTATION, digestHex, hostPlatform, isNotFound, parsePlatform, sha256Of } from '@mybuild/oci';
import { INDEX_LOCK, acquireLock, openStore, putJsonBlob, type Store } from '@mybuild/layer-store';
import { makeImage, makeIndex, pattern, rawTag, rejection, tempStore } from './helpers-store.js';

const execFileP = promisify(execFile);

let store: Store;
let root: string;
let cleanup: () => Promise<void>;

beforeEach(async () => {
  ({ store, root, cleanup } = await tempStore());
});
afterEach(async () => cleanup());

async function indexJson(): Promise<ImageIndex> {
  return JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as ImageIndex;
}

const refNames = async () => (await indexJson()).manifests.map((d) => d.annotations?.[REF_NAME_ANNOTATION]);

describe('tags in index.json', () => {
  test('tags are stored in familiar form and resolve by every spelling', async () => {
    const img = await makeImage(store, { layers: [pattern(1000)] });
    await store.images.tag('alpine', img.manifest);
    await store.images.tag('docker.io/team/app:1.2', img.manifest);
    await store.images.tag('localhost:5000/team/app:1.2', img.manifest);
    expect(await refNames()).toEqual(['alpine:latest', 'team/app:1.2', 'localhost:5000/team/app:1.2']);
    const index = await indexJson();
    expect(index.mediaType).toBe(MediaType.OciIndex);
    expect(index.manifests[0]).toMatchObject({ mediaType: img.manifest.mediaType, digest: img.manifest.digest, size: img.manifest.size });

    for (const spelling of ['alpine', 'alpine:latest', 'docker.io/library/alpine:latest', 'index.docker.io/library/alpine', 'team/app:1.2', 'docker.io/team/app:1.2']) {
      const r = await store.images.resolve(spelling);
      expect(r.manifestDescriptor.digest, spelling).toBe(img.manifest.digest);
      expect(r.id).toBe(img.config.digest);
      expect(r.config.rootfs.diff_ids).toEqual(img.diffIds);
    }
    const r = await store.images.resolve('localhost:5000/team/app:1.2');
    expect(r.names.sort()).toEqual(['alpine:latest', 'localhost:5000/team/app:1.2', 'team/app:1.2']);
    expect(isNotFound(await rejection(store.images.resolve('team/app:1.3')))).toBe(true);
    expect(isNotFound(await rejection(store.images.resolve('localhost:5001/team/app:1.2')))).toBe(true);
  });

  test('retagging replaces the tag in place; untag removes it and returns its target', async () => {
    const a = await makeImage(store, { layers: [pattern(10, 1)], label: 'a' });
    const b = await makeImage(store, { layers: [pattern(10, 2)], label: 'b' });
    await store.images.tag('app:1', a.manifest);
    await store.images.tag('other:1', a.manifest);
    await store.images.tag('app:1', b.manifest);
    const index = await indexJson();
    expect(index.manifests.map((d) => [d.annotations?.[REF_NAME_ANNOTATION], d.digest])).toEqual([
      ['app:1', b.manifest.digest],
      ['other:1', a.manifest.digest],
    ]);
    expect((await store.images.untag('docker.io/library/app:1')).digest).toBe(b.manifest.digest);
    expect(await refNames()).toEqual(['other:1']);
    const err = await rejection(store.images.untag('app:1'));
    expect(err.code).toBe('NOT_FOUND');
    expect(err.where).toBe('app:1');
    expect((await store.images.list()).map((r) => r.name)).toEqual(['other:1']);
  });

  test('tag refuses digests, missing blobs, non-manifests, wrong sizes and images lacking a layer', async () => {
    const img = await makeImage(store, { layers: [] });
    const partial = await makeImage(store, { layers: [pattern(100, 1), pattern(100, 2)] });
    await store.content.delete(partial.layers[1]!.digest);
    const lacking = await rejection(store.images.tag('partial:1', partial.manifest));
    expect(lacking.code).toBe('FAILED_PRECONDITION');
    expect(lacking.message).toContain(partial.layers[1]!.digest);
    // a foreign layer (with urls) may be absent
    const foreign = await putJsonBlob(store.content, { schemaVersion: 2, config: partial.config, layers: [partial.layers[0], { ...partial.layers[1], mediaType: MediaType.DockerForeignLayerGzip, urls: ['https://example.com/l'] }] }, MediaType.OciManifest);
    await store.images.tag('foreign:1', foreign);
    await store.images.untag('foreign:1');
    expect((await rejection(store.images.tag(`app@${img.manifest.digest}`, img.manifest))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(store.images.tag('App:1', img.manifest))).code).toBe('INVALID_ARGUMENT');
    const absent: Descriptor = { ...img.manifest, digest: sha256Of('absent') };
    expect((await rejection(store.images.tag('app:1', absent))).code).toBe('NOT_FOUND');
    expect((await rejection(store.images.tag('app:1', img.config))).code).toBe('INVALID_ARGUMENT');
    expect((await rejection(store.images.tag('app:1', { ...img.manifest, size: img.manifest.size + 1 }))).code).toBe('INVALID_ARGUMENT');
    expect(await refNames()).toEqual([]);
  });

  test('untagged entries: add, list, tag takes them over, remove', async () => {
    const img = await makeImage(store, { layers: [] });
    await store.images.add(img.manifest);
    await store.images.add(img.manifest);
    expect(await store.images.list()).toEqual([{ name: '', target: img.manifest }]);
    expect((await store.images.resolve(img.manifest.digest)).id).toBe(img.config.digest);
    await store.images.tag('app:1', img.manifest);
    expect(await refNames()).toEqual(['app:1']);
    expect(await store.images.remove(img.manifest)).toBe(1);
    expect(await refNames()).toEqual([]);
    expect((await rejection(store.images.remove(img.manifest))).code).toBe('NOT_FOUND');
  });

  test('parallel tags from one process all land (the index lock serialises them)', async () => {
    const img = await makeImage(store, { layers: [] });
    await Promise.all(Array.from({ length: 24 }, (_, i) => store.images.tag(`app:${i}`, img.manifest)));
    expect((await refNames()).sort()).toEqual(Array.from({ length: 24 }, (_, i) => `app:${i}`).sort());
  });

  test('a tag already in place (a cached rebuild) neither writes nor waits for the index lock; a change does', async () => {
    const img = await makeImage(store, { layers: [] });
    const other = await makeImage(store, { layers: [], label: 'other' });
    await store.images.tag('app:1', img.manifest);
    await store.images.add(img.manifest);
    const file = join(root, 'index.json');
    const written = (await stat(file)).mtimeMs;
    const held = await acquireLock(store.paths.locks, INDEX_LOCK);
    let moved = false;
    let pending: Promise<void> | undefined;
    try {
      await store.images.tag('docker.io/library/app:1', img.manifest); // the same tag, spelt otherwise
      await store.images.add(img.manifest); // tagged already
      pending = store.images.tag('app:1', other.manifest).then(() => void (moved = true));
      await sleep(150);
      expect(moved).toBe(false); // a real change waits for the lock
    } finally {
      await held.release();
    }
    await pending;
    expect((await stat(file)).mtimeMs).toBeGreaterThan(written);
    expect((await store.images.resolve('app:1')).manifestDescriptor.digest).toBe(other.manifest.digest);
    expect(await store.images.tag('app:1', img.manifest)).toBeUndefined(); // and back, under the lock
    expect((await store.images.resolve('app:1')).manifestDescriptor.digest).toBe(img.manifest.digest);
  });
});

describe('resolve by ID and digest', () => {
  test('full digest, image ID with and without sha256:, short ID', async () => {
    const a = await makeImage(store, { layers: [pattern(100, 1)], label: 'a' });
    const b = await makeImage(store, { layers: [pattern(100, 2)], label: 'b' });
    await store.images.tag('a:1', a.manifest);
    await store.images.tag('b:1', b.manifest);
    expect((await store.images.resolve(a.manifest.digest)).names).toEqual(['a:1']);
    expect((await store.images.resolve(a.config.digest)).manifestDescriptor.digest).toBe(a.manifest.digest);
    expect((await store.images.resolve(digestHex(b.config.digest))).manifestDescriptor.digest).toBe(b.manifest.digest);
    expect((await store.images.resolve(`a:1@${a.manifest.digest}`)).id).toBe(a.config.digest);
    // a short ID long enough to tell them apart
    let n = 4;
    while (digestHex(a.config.digest).slice(0, n) === digestHex(b.config.digest).slice(0, n)) n++;
    expect((await store.images.resolve(digestHex(a.config.digest).slice(0, n))).id).toBe(a.config.digest);
    expect((await store.images.resolve(`sha256:${digestHex(b.config.digest).slice(0, 12)}`)).id).toBe(b.config.digest);
    expect(isNotFound(await rejection(store.images.resolve('0000')))).toBe(true);
    expect(isNotFound(await rejection(store.images.resolve(sha256Of('nothing'))))).toBe(true);
    // three hex digits are a (missing) tag, not an ID
    expect(isNotFound(await rejection(store.images.resolve(digestHex(a.config.digest).slice(0, 3))))).toBe(true);
  });

  test('an ambiguous short ID is a clear error', async () => {
    // find two configs whose IDs share their first 4 hex digits
    const seen = new Map<string, number>();
    let pair: [number, number] | undefined;
    for (let i = 0; !pair; i++) {
      const bytes = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, config: { Labels: { n: String(i) } } });
      const prefix = digestHex(sha256Of(bytes)).slice(0, 4);
      const j = seen.get(prefix);
      if (j !== undefined) pair = [j, i];
      seen.set(prefix, i);
    }
    const ids = [];
    for (const i of pair) {
      const config = await putJsonBlob(store.content, { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] }, config: { Labels: { n: String(i) } } }, MediaType.OciConfig);
      const manifest = await putJsonBlob(store.content, { schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers: [] }, MediaType.OciManifest);
      await store.images.tag(`amb:${i}`, manifest);
      ids.push(config.digest);
    }
    const prefix = digestHex(ids[0]!).slice(0, 4);
    expect(digestHex(ids[1]!).slice(0, 4)).toBe(prefix);
    const err = await rejection(store.images.resolve(prefix));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.message).toContain('ambiguous');
    expect(err.hint).toBeTruthy();
    // a longer prefix picks one
    let n = 5;
    while (digestHex(ids[0]!).slice(0, n) === digestHex(ids[1]!).slice(0, n)) n++;
    expect((await store.images.resolve(digestHex(ids[0]!).slice(0, n))).id).toBe(ids[0]);
  });
});

describe('indexes and platforms', () => {
  async function multiArch(docker = false) {
    const amd = await makeImage(store, { layers: [pattern(50, 1)], platform: { os: 'linux', architecture: 'amd64' }, docker });
    const arm64 = await makeImage(store, { layers: [pattern(50, 2)], platform: { os: 'linux', architecture: 'arm64', variant: 'v8' }, docker });
    const armv7 = await makeImage(store, { layers: [pattern(50, 3)], platform: { os: 'linux', architecture: 'arm', variant: 'v7' }, docker });
    const attestation = await makeImage(store, { layers: [], platform: { os: 'unknown', architecture: 'unknown' } });
    const index = await makeIndex(
      store,
      [
        { ...amd.manifest, platform: { os: 'linux', architecture: 'amd64' } },
        { ...arm64.manifest, platform: { os: 'linux', architecture: 'arm64' } }, // no variant: means v8
        { ...armv7.manifest, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
        { ...attestation.manifest, platform: { os: 'unknown', architecture: 'unknown' } },
      ],
      docker,
    );
    return { amd, arm64, armv7, index };
  }

  test('selects the platform asked for, and the host platform by default', async () => {
    const { amd, arm64, armv7, index } = await multiArch();
    await store.images.tag('multi:1', index);
    const pick = async (platform?: string) => (await store.images.resolve('multi:1', platform ? { platform } : {})).manifestDescriptor.digest;
    expect(await pick('linux/amd64')).toBe(amd.manifest.digest);
    expect(await pick('linux/arm64')).toBe(arm64.manifest.digest);
    expect(await pick('linux/arm64/v8')).toBe(arm64.manifest.digest);
    expect(await pick('linux/aarch64')).toBe(arm64.manifest.digest);
    expect(await pick('linux/arm/v7')).toBe(armv7.manifest.digest);
    expect(await pick('linux/arm')).toBe(armv7.manifest.digest);
    const host = hostPlatform();
    const expected = { amd64: amd, arm64 }[host.architecture as 'amd64' | 'arm64'];
    if (expected) expect(await pick()).toBe(expected.manifest.digest);
    expect(parsePlatform('linux/arm64')).toEqual({ os: 'linux', architecture: 'arm64', variant: 'v8' });

    const r = await store.images.resolve('multi:1', { platform: 'linux/arm/v7' });
    expect(r.index?.descriptor.digest).toBe(index.digest);
    expect(r.index?.index.manifests).toHaveLength(4);
    expect(r.id).toBe(armv7.config.digest);
    expect(r.names).toEqual(['multi:1']);

    const err = await rejection(store.images.resolve('multi:1', { platform: 'linux/s390x' }));
    expect(err.code).toBe('NOT_FOUND');
    expect(err.hint).toContain('linux/arm64');
    expect((await rejection(store.images.resolve('multi:1', { platform: 'linux' }))).code).toBe('INVALID_ARGUMENT');
  });

  test('a platform manifest is found by its own digest or image ID, whatever the host', async () => {
    const { armv7, index } = await multiArch();
    await store.images.tag('multi:1', index);
    expect((await store.images.resolve(armv7.manifest.digest)).id).toBe(armv7.config.digest);
    const byId = await store.images.resolve(armv7.config.digest);
    expect(byId.manifestDescriptor.digest).toBe(armv7.manifest.digest);
    expect(byId.index?.descriptor.digest).toBe(index.digest);
    expect((await store.images.resolve(digestHex(armv7.config.digest).slice(0, 12))).id).toBe(armv7.config.digest);
  });

  test('Docker v2 manifest lists and manifests resolve the same way', async () => {
    const { arm64, index } = await multiArch(true);
    expect(index.mediaType).toBe(MediaType.DockerManifestList);
    await store.images.tag('dock:1', index);
    const r = await store.images.resolve('dock:1', { platform: 'linux/arm64' });
    expect(r.manifestDescriptor.digest).toBe(arm64.manifest.digest);
    expect(r.manifest.mediaType).toBe(MediaType.DockerManifest);
    expect(r.configDescriptor.mediaType).toBe(MediaType.DockerConfig);
  });
});

describe('defensive reading', () => {
  test('a manifest that is not JSON or has the wrong shape is INVALID_ARGUMENT where=its digest', async () => {
    const cases: unknown[] = ['not json at all {', { schemaVersion: 1 }, { schemaVersion: 2, config: { digest: 'sha256:zz', size: 1, mediaType: 'x' }, layers: [] }, { schemaVersion: 2, config: null, layers: 'no' }];
    for (const [i, c] of cases.entries()) {
      const bytes = Buffer.from(typeof c === 'string' ? c : JSON.stringify(c));
      const info = await store.content.putBytes(bytes);
      const desc = { mediaType: MediaType.OciManifest, digest: info.digest, size: info.size };
      expect((await rejection(store.images.tag(`bad:${i}`, desc))).code).toBe('INVALID_ARGUMENT');
      await rawTag(root, `bad:${i}`, desc);
      const err = await rejection(store.images.resolve(`bad:${i}`));
      expect(err.code, JSON.stringify(c)).toBe('INVALID_ARGUMENT');
      expect(err.where).toBe(info.digest);
      expect(err.oneLine().split('\n')).toHaveLength(1);
    }
  });

  test('a config without rootfs, or with diff IDs not matching the layers, is refused', async () => {
    const config = await putJsonBlob(store.content, { architecture: 'amd64', os: 'linux' }, MediaType.OciConfig);
    const m = await putJsonBlob(store.content, { schemaVersion: 2, config, layers: [] }, MediaType.OciManifest);
    await store.images.tag('noroot:1', m);
    const err = await rejection(store.images.resolve('noroot:1'));
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.where).toBe(config.digest);

    const img = await makeImage(store, { layers: [pattern(10)] });
    const m2 = await putJsonBlob(store.content, { schemaVersion: 2, config: img.config, layers: [] }, MediaType.OciManifest);
    await store.images.tag('mismatch:1', m2);
    expect((await rejection(store.images.resolve('mismatch:1'))).code).toBe('INVALID_ARGUMENT');
  });

  test('an artifact (non-image config) is UNSUPPORTED; an oversized manifest is SIZE_EXCEEDED', async () => {
    const empty = await putJsonBlob(store.content, {}, MediaType.OciEmpty);
    const art = await putJsonBlob(store.content, { schemaVersion: 2, mediaType: MediaType.OciManifest, artifactType: 'application/x.sig', config: empty, layers: [] }, MediaType.OciManifest);
    await store.images.tag('art:1', art);
    expect((await rejection(store.images.resolve('art:1'))).code).toBe('UNSUPPORTED');

    const big = await store.content.putBytes(Buffer.alloc(4 * 1024 * 1024 + 1, 0x20));
    await rawTag(root, 'big:1', { mediaType: MediaType.OciManifest, digest: big.digest, size: big.size });
    const err = await rejection(store.images.resolve('big:1'));
    expect(err.code).toBe('SIZE_EXCEEDED');
    expect(err.where).toBe(big.digest);
  });

  test('a damaged index.json is a clear error naming the file', async () => {
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(root, 'index.json'), '{"schemaVersion":2,"manifests":[{"digest":"nope"}]}');
    const err = await rejection(store.images.list());
    expect(err.code).toBe('INVALID_ARGUMENT');
    expect(err.where).toBe(join(root, 'index.json'));
  });
});

describe('interop with skopeo and umoci', () => {
  test('skopeo inspects a tag we wrote; we resolve a tag umoci wrote', async () => {
    const img = await makeImage(store, { layers: [pattern(2000)] });
    await store.images.tag('app:1.2', img.manifest);
    const { stdout } = await execFileP('skopeo', ['inspect', '--raw', `oci:${root}:app:1.2`]);
    expect(sha256Of(stdout)).toBe(img.manifest.digest);
    const { stdout: ls } = await execFileP('umoci', ['ls', '--layout', root]);
    expect(ls.split('\n')).toContain('app:1.2');

    // umoci names its tags bare (`v1`); they resolve as `v1:latest`
    await execFileP('umoci', ['new', '--image', `${root}:base`]);
    const theirs = await openStore(root);
    const r = await theirs.images.resolve('base');
    expect(r.manifest.layers).toEqual([]);
    expect((await theirs.images.resolve('app:1.2')).manifestDescriptor.digest).toBe(img.manifest.digest);
  });
});
