/**
 * Findings of a hostile review of the extraction and import code: each test is the crafted input
 * that showed the problem. Trees are compared with what Go's archive/tar reads (docker,
 * containerd, umoci and most image scanners use it): an entry that mybuild extracts but those
 * tools do not see (or the reverse) is content smuggled past every review of the layer.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, realpathSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Digest, MediaType, MyBuildError, sha256Of } from '@mybuild/oci';
import { type ApplyMode, type Store, applyLayer, loadArchive, openStore, sys } from '@mybuild/layer-store';
import { type TarEntry, buildTar, gzip, makeLayer, nodeInfo, paxRecord, rmrf, streamOf, tarEntry, tempDir, ustarHeader, writeOciLayout } from './helpers-tar.js';

const S_IFCHR = 0o020000;
const PAD = (n: number): Buffer => Buffer.alloc((512 - (n % 512)) % 512);

/** Recompute a hand-edited ustar header's checksum. */
function rechecksum(h: Buffer): Buffer {
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return h;
}

/** A PAX global header ('g') carrying `records`. */
function globalHeader(records: Buffer[]): Buffer {
  const body = Buffer.concat(records);
  return Buffer.concat([ustarHeader({ name: 'pax_global_header', typeflag: 'g', size: body.length }), body, PAD(body.length)]);
}

/** A header-only entry (link, symlink, device, fifo) that claims `body` as data. */
function withBody(e: { name: string; typeflag: string; linkname?: string }, body: Buffer): Buffer {
  return Buffer.concat([ustarHeader({ ...e, size: body.length }), body, PAD(body.length)]);
}

/** `p`, or a failure after `ms` (a stalled parser never settles). */
function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function apply(tar: Buffer, root: string, mode: ApplyMode): Promise<MyBuildError | undefined> {
  try {
    await applyLayer(streamOf(tar), root, { mode });
    return undefined;
  } catch (err) {
    if (err instanceof MyBuildError) return err;
    throw err;
  }
}

/** `find` listing of a tree: path, type, uid, size. */
function listing(dir: string): string[] {
  return execFileSync('find', ['.', '-printf', '%p %y %U %s\\n'], { cwd: dir }).toString().trim().split('\n').sort();
}

const haveUmoci = (() => {
  try {
    execFileSync('umoci', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

/** What `umoci raw unpack` (Go's archive/tar) makes of an uncompressed layer. */
function umociListing(tar: Buffer): string[] {
  const tmp = tempDir('mybuild-umoci-');
  try {
    writeOciLayout(join(tmp, 'img'), [makeLayer(tar, 'none')]);
    execFileSync('umoci', ['raw', 'unpack', '--image', `${join(tmp, 'img')}:test`, join(tmp, 'rootfs')], { stdio: 'pipe' });
    return listing(join(tmp, 'rootfs'));
  } finally {
    rmrf(tmp);
  }
}

let tmp: string;
beforeEach(() => {
  tmp = tempDir('mybuild-review-');
});
afterEach(() => rmrf(tmp));

describe.each<ApplyMode>(['overlay', 'flatten'])('tar framing is read as Go reads it (%s mode)', (mode) => {
  it('refuses entries after the end-of-archive marker (docker and scanners never see them)', async () => {
    const tar = Buffer.concat([tarEntry({ name: 'a', data: 'a' }), Buffer.alloc(1024), tarEntry({ name: 'bin/sh', data: 'backdoor' }), Buffer.alloc(1024)]);
    const err = await apply(tar, join(tmp, 'r'), mode);
    expect(err?.code).toBe('INVALID_ARGUMENT');
    expect(existsSync(join(tmp, 'r/bin/sh'))).toBe(false);
  });

  it('refuses an entry after a lone zero block (Go: invalid tar header)', async () => {
    const tar = Buffer.concat([tarEntry({ name: 'a', data: 'a' }), Buffer.alloc(512), tarEntry({ name: 'hidden', data: 'x' }), Buffer.alloc(1024)]);
    const err = await apply(tar, join(tmp, 'r'), mode);
    expect(err?.code).toBe('INVALID_ARGUMENT');
    expect(existsSync(join(tmp, 'r/hidden'))).toBe(false);
  });

  it('still accepts zero blocks padding the end of the archive', async () => {
    const tar = Buffer.concat([tarEntry({ name: 'a', data: 'a' }), Buffer.alloc(10240)]);
    expect(await apply(tar, join(tmp, 'r'), mode)).toBeUndefined();
    expect(readFileSync(join(tmp, 'r/a'), 'utf8')).toBe('a');
  });

  it('refuses a file whose size field does not parse (tar-stream would stall on it forever)', async () => {
    const h = ustarHeader({ name: 'f', typeflag: '0', size: 0 });
    h.fill(0, 124, 136);
    h[124] = 0x81; // a base-256 marker tar-stream cannot read: size becomes null
    const err = await within(5000, apply(Buffer.concat([rechecksum(h), Buffer.alloc(2048)]), join(tmp, 'r'), mode));
    expect(err?.code).toBe('INVALID_ARGUMENT');
  });

  it('ignores PAX global headers: they name, size, own and label nothing (as docker and containerd)', async () => {
    const tar = Buffer.concat([
      globalHeader([paxRecord('path', 'etc/passwd'), paxRecord('uid', '4242'), paxRecord('SCHILY.xattr.user.g', 'x'), paxRecord('mtime', '1.5')]),
      buildTar([
        { name: 'harmless', data: 'root::0:0::/:/bin/sh', pax: { comment: 'a local header, so tar-stream merges the global one' } },
        { name: 'plain', data: 'p' },
      ]),
    ]);
    const root = join(tmp, 'r');
    expect(await apply(tar, root, mode)).toBeUndefined();
    expect(existsSync(join(root, 'etc'))).toBe(false);
    expect(readFileSync(join(root, 'harmless'), 'utf8')).toBe('root::0:0::/:/bin/sh');
    for (const f of ['harmless', 'plain']) {
      expect(nodeInfo(join(root, f))).toMatchObject({ uid: 0, xattrs: {} });
      expect(lstatSync(join(root, f)).mtimeMs).toBe(1_700_000_000_000);
    }
  });

  it('ignores a PAX global size (it would make the next body be parsed as headers)', async () => {
    const inner = tarEntry({ name: 'smuggled', data: 'x' });
    const tar = Buffer.concat([globalHeader([paxRecord('size', '0')]), buildTar([{ name: 'blob', data: inner, pax: { comment: 'c' } }])]);
    const root = join(tmp, 'r');
    expect(await apply(tar, root, mode)).toBeUndefined();
    expect(readFileSync(join(root, 'blob'))).toEqual(inner);
    expect(existsSync(join(root, 'smuggled'))).toBe(false);
  });

  it.each([
    ['symlink', { name: 's', typeflag: '2', linkname: 'target' }],
    ['hardlink', { name: 'h', typeflag: '1', linkname: 'a' }],
    ['fifo', { name: 'p', typeflag: '6' }],
  ])('a %s entry has no body: a size does not hide the entries after its header', async (_kind, header) => {
    // Go reads the "body" as the next headers: a later 'a' replaces the earlier one
    const inner = Buffer.concat([tarEntry({ name: 'a', data: 'overwritten' }), tarEntry({ name: 'inner', data: 'i' })]);
    const tar = Buffer.concat([tarEntry({ name: 'a', data: 'malicious' }), withBody(header, inner), tarEntry({ name: 'after', data: 'z' }), Buffer.alloc(1024)]);
    const root = join(tmp, 'r');
    expect(await apply(tar, root, mode)).toBeUndefined();
    expect(readFileSync(join(root, 'a'), 'utf8')).toBe('overwritten');
    expect(readFileSync(join(root, 'inner'), 'utf8')).toBe('i');
    expect(readFileSync(join(root, 'after'), 'utf8')).toBe('z');
    if (mode === 'flatten' && haveUmoci) expect(listing(root)).toEqual(umociListing(tar));
  });
});

describe('path resolution cost', () => {
  it('a chain of long symlinks through a deep directory costs bounded time per entry', async () => {
    const depth = 680;
    const entries: TarEntry[] = [{ name: 'd/'.repeat(depth), type: 'dir' }];
    const filler = `${'d/'.repeat(depth)}${'../'.repeat(depth)}`;
    const hops = 40;
    for (let i = 0; i < hops; i++) entries.push({ name: `l${i}`, type: 'symlink', linkname: `${filler}l${i + 1}` });
    entries.push({ name: `l${hops}`, type: 'symlink', linkname: 'd' });
    for (let j = 0; j < 100; j++) entries.push({ name: `l0/f${j}`, data: '' });
    const tar = buildTar(entries);
    const started = Date.now();
    const err = await apply(tar, join(tmp, 'r'), 'flatten');
    const elapsed = Date.now() - started;
    if (err) expect(err.code).toBe('UNSAFE_PATH');
    expect(elapsed).toBeLessThan(3000);
  });

  it('ordinary symlinked parents still resolve', async () => {
    const root = join(tmp, 'r');
    const tar = buildTar([
      { name: 'usr/lib/x86_64/', type: 'dir' },
      { name: 'lib', type: 'symlink', linkname: 'usr/lib' },
      { name: 'usr/lib64', type: 'symlink', linkname: '/lib/x86_64' },
      { name: 'usr/lib64/../../lib64/../lib/x86_64/libc.so', data: 'c' },
      { name: 'usr/lib64/libm.so', data: 'm' },
      { name: `${'a/'.repeat(1000)}deep`, data: 'deep' },
    ]);
    expect(await apply(tar, root, 'flatten')).toBeUndefined();
    expect(readFileSync(join(root, 'usr/lib/x86_64/libc.so'), 'utf8')).toBe('c');
    expect(readFileSync(join(root, 'usr/lib/x86_64/libm.so'), 'utf8')).toBe('m');
    expect(readFileSync(join(root, `${'a/'.repeat(1000)}deep`), 'utf8')).toBe('deep');
  });
});

describe('whiteout cost (flatten mode)', () => {
  it.each([
    ['an opaque marker', 'd/.wh..wh..opq'],
    ['a whiteout of a directory this layer wrote', '.wh.d'],
  ])('repeating %s does not walk the layer\'s tree again each time', async (_kind, marker) => {
    const root = join(tmp, 'r');
    await applyLayer(streamOf(buildTar([{ name: 'd/lower', data: 'l' }])), root, { mode: 'flatten' });
    const entries: TarEntry[] = [];
    for (let i = 0; i < 20_000; i++) entries.push({ name: `d/f${i}`, data: '' });
    const files = buildTar(entries, { end: false });
    const markers = Buffer.concat(Array.from({ length: 3000 }, () => tarEntry({ name: marker, data: '' })));
    const started = Date.now();
    expect(await apply(Buffer.concat([files, markers, Buffer.alloc(1024)]), root, 'flatten')).toBeUndefined();
    const elapsed = Date.now() - started;
    expect(existsSync(join(root, 'd/lower'))).toBe(false);
    expect(readdirSync(join(root, 'd'))).toHaveLength(20_000);
    // Linear work here is ~3 s; walking 20,000 entries for each of 3,000 markers would be
    // 60 million steps (minutes). The bound leaves room for a machine busy with other work.
    expect(elapsed).toBeLessThan(40_000);
  }, 120_000);
});

describe('whiteout semantics kept by the cost bound (flatten mode)', () => {
  it('a repeated marker is skipped only where it is a repeat: other directories, also through symlinks, are purged', async () => {
    const root = join(tmp, 'r');
    await applyLayer(streamOf(buildTar([{ name: 'x/old', data: 'o' }, { name: 'y/old', data: 'o' }, { name: 'y/sub/old', data: 'o' }, { name: 'z', data: 'z' }])), root, { mode: 'flatten' });
    const tar = buildTar([
      { name: 'x/new', data: 'n' },
      { name: 'x/.wh..wh..opq', data: '' },
      { name: 'x/.wh..wh..opq', data: '' },
      { name: 's', type: 'symlink', linkname: '/y' },
      { name: 's/sub/.wh..wh..opq', data: '' },
      { name: 's/.wh.old', data: '' },
      { name: 'x/.wh.new', data: '' },
      { name: '.wh.z', data: '' },
    ]);
    expect(await apply(tar, root, 'flatten')).toBeUndefined();
    expect(readdirSync(join(root, 'x'))).toEqual(['new']);
    expect(readdirSync(join(root, 'y'))).toEqual(['sub']);
    expect(readdirSync(join(root, 'y/sub'))).toEqual([]);
    expect(existsSync(join(root, 'z'))).toBe(false);
  });
});

describe('xattr names', () => {
  it.each([
    ['SCHILY', { xattrs: { 'security.selinux\0x': 'system_u:object_r:shadow_t:s0' } }],
    ['LIBARCHIVE', { pax: { 'LIBARCHIVE.xattr.security.selinux%00x': Buffer.from('system_u:object_r:shadow_t:s0').toString('base64') } }],
  ])('a NUL in a %s xattr name does not set the forbidden security.selinux', async (_kind, extra) => {
    const root = join(tmp, 'r');
    const err = await apply(buildTar([{ name: 'f', data: 'x', ...extra }]), root, 'flatten');
    expect(err?.code).toBe('INVALID_ARGUMENT');
    if (existsSync(join(root, 'f'))) expect(sys().lgetxattr(join(root, 'f'), 'security.selinux')).toBeNull();
  });
});

/** Make directories under `base` so that `base/…` is exactly `bytes` long; returns that path. */
function pathOfLength(base: string, bytes: number): string {
  let p = base;
  while (bytes - p.length > 256) {
    p = `${p}/${'d'.repeat(200)}`;
  }
  const last = bytes - p.length - 1;
  if (last > 255 || last < 1) throw new Error(`cannot pad to ${bytes}`);
  p = `${p}/${'e'.repeat(last)}`;
  return p;
}

describe('native addon: strings and numbers', () => {
  it('refuses a path whose UTF-8 form does not fit, instead of truncating it to another path', () => {
    const target = pathOfLength(realpathSync(tmp), 4094);
    mkdirSync(join(target, '..'), { recursive: true });
    writeFileSync(target, 'victim');
    utimesSync(target, 1000, 1000);
    // 4094 + 2 bytes: N-API writes at most 4095 bytes, and stops before the split 'é'
    expect(() => sys().lutimens(`${target}é`, 5, 0, 5, 0)).toThrow();
    expect(() => sys().lsetxattr(`${target}é`, 'user.x', Buffer.from('y'))).toThrow();
    expect(lstatSync(target).mtimeMs).toBe(1_000_000);
    expect(sys().lgetxattr(target, 'user.x')).toBeNull();
  });

  it('refuses a NUL inside a path or an xattr name', () => {
    const f = join(tmp, 'f');
    writeFileSync(f, '');
    expect(() => sys().lsetxattr(f, 'security.selinux\0x', Buffer.from('y'))).toThrow();
    expect(sys().lgetxattr(f, 'security.selinux')).toBeNull();
    expect(() => sys().lutimens(`${f}\0/ignored`, 5, 0, 5, 0)).toThrow();
  });

  it('refuses device numbers that are not numbers (no uninitialised dev_t)', () => {
    const p = join(tmp, 'dev');
    expect(() => sys().mknod(p, S_IFCHR | 0o600, null as unknown as number, null as unknown as number)).toThrow();
    expect(existsSync(p)).toBe(false);
    expect(() => sys().flock(undefined as unknown as number, true, false)).toThrow();
  });

  it.each<ApplyMode>(['overlay', 'flatten'])('%s: a device entry whose device number does not parse is refused', async (mode) => {
    const h = ustarHeader({ name: 'dev/evil', typeflag: '3', size: 0, mode: 0o666 });
    h.fill(0, 329, 345);
    h[329] = 0x81; // base-256 marker tar-stream cannot read: devmajor becomes null
    const tar = Buffer.concat([rechecksum(h), Buffer.alloc(1024)]);
    const root = join(tmp, 'r');
    const err = await apply(tar, root, mode);
    expect(err?.code).toBe('INVALID_ARGUMENT');
    expect(existsSync(join(root, 'dev/evil'))).toBe(false);
  });

  it.each<[ApplyMode, string, TarEntry['type']]>([
    ['overlay', 'whiteout', 'file'],
    ['flatten', 'fifo', 'fifo'],
  ])('%s: a %s whose multi-byte name crosses PATH_MAX is refused, not created under a truncated name', async (mode, kind, type) => {
    const root = join(tmp, 'r');
    mkdirSync(root);
    // parent of odd length: the N-API copy stops one byte early, before a split 'é'
    const parentHost = pathOfLength(realpathSync(root), 3901);
    const parent = parentHost.slice(realpathSync(root).length + 1);
    const victim = 'é'.repeat(100);
    const name = kind === 'whiteout' ? `${parent}/.wh.${victim}` : `${parent}/${victim}`;
    const err = await apply(buildTar([{ name, type, data: '' }]), root, mode);
    expect(err?.code).toBe('UNSAFE_PATH');
    expect(existsSync(parentHost) ? readdirSync(parentHost) : []).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------
// Archive import

async function archiveStore(): Promise<Store> {
  return openStore(join(tmp, 'store'));
}

/** An OCI archive whose index.json fans out through `levels` nested indexes, `fanout` wide each. */
function fanOutArchive(fanout: number, levels: number): Buffer {
  const blobs = new Map<Digest, Buffer>();
  const put = (b: Buffer): Digest => {
    const d = sha256Of(b);
    blobs.set(d, b);
    return d;
  };
  let doc = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] }));
  for (let l = 0; l < levels; l++) {
    const d = put(doc);
    const desc = { mediaType: MediaType.OciIndex, digest: d, size: doc.length };
    doc = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: Array.from({ length: fanout }, () => desc) }));
  }
  const top = put(doc);
  const index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [{ mediaType: MediaType.OciIndex, digest: top, size: doc.length }] };
  return buildTar([
    { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
    { name: 'index.json', data: JSON.stringify(index) },
    ...[...blobs].map(([d, b]) => ({ name: `blobs/sha256/${d.slice(7)}`, data: b })),
  ]);
}

/** A docker-archive of one image whose layer list names `layer` `times` times. */
function dockerArchive(layer: Buffer, diffId: Digest, times: number, extra: TarEntry[] = []): Buffer {
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: Array.from({ length: times }, () => diffId) } });
  const manifest = JSON.stringify([{ Config: 'config.json', RepoTags: ['review:latest'], Layers: Array.from({ length: times }, () => 'layer.tar.gz') }]);
  return buildTar([...extra, { name: 'config.json', data: config }, { name: 'layer.tar.gz', data: layer }, { name: 'manifest.json', data: manifest }]);
}

describe('archive load', () => {
  it('refuses a member whose size field does not parse instead of stalling forever', async () => {
    const store = await archiveStore();
    const h = ustarHeader({ name: 'manifest.json', typeflag: '0', size: 0 });
    h.fill(0, 124, 136);
    h[124] = 0x81;
    const err = await within(5000, loadArchive(store, streamOf(Buffer.concat([rechecksum(h), Buffer.alloc(2048)])), 'stall.tar')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MyBuildError);
    expect((err as MyBuildError).code).toBe('INVALID_ARGUMENT');
  });

  it('reads archives framed as docker reads them: nothing after the end-of-archive marker', async () => {
    const store = await archiveStore();
    const tar = buildTar([{ name: 'f', data: 'x' }]);
    // docker load tags review:latest; a manifest.json after the marker must not retag it
    const retag = JSON.stringify([{ Config: 'config.json', RepoTags: ['evil:latest'], Layers: ['layer.tar.gz'] }]);
    const archive = Buffer.concat([dockerArchive(tar, sha256Of(tar), 1), tarEntry({ name: 'manifest.json', data: retag }), Buffer.alloc(1024)]);
    const err = await loadArchive(store, streamOf(archive), 'eoa.tar').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MyBuildError);
    expect((err as MyBuildError).code).toBe('INVALID_ARGUMENT');
    expect((await store.images.list()).map((i) => i.name)).toEqual([]);
  });

  it('checks nested indexes that fan out to the same blobs once each (no exponential walk)', async () => {
    const store = await archiveStore();
    const started = Date.now();
    const images = await loadArchive(store, streamOf(fanOutArchive(100, 3)), 'fanout.tar');
    expect(images).toHaveLength(1);
    expect(Date.now() - started).toBeLessThan(10_000);
  }, 120_000);

  it('decompresses a layer the manifest lists many times once', async () => {
    const store = await archiveStore();
    const tar = buildTar([{ name: 'f', data: 'x'.repeat(100_000) }]);
    const layer = gzip(tar);
    const reads = new Map<string, number>();
    const read = store.content.read.bind(store.content);
    store.content.read = (d, o) => {
      reads.set(d, (reads.get(d) ?? 0) + 1);
      return read(d, o);
    };
    await loadArchive(store, streamOf(dockerArchive(layer, sha256Of(tar), 200)), 'repeat.tar');
    expect(reads.get(sha256Of(layer)) ?? 0).toBeLessThanOrEqual(2);
  });

  it('bounds what a docker-archive layer may expand to while its diffID is computed', async () => {
    const store = await archiveStore();
    const tar = buildTar([{ name: 'bomb', data: Buffer.alloc(32 * 1024 * 1024) }]);
    const started = Date.now();
    const err = await loadArchive(store, streamOf(dockerArchive(gzip(tar), sha256Of(tar), 1)), 'bomb.tar', { maxLayerBytes: 1024 * 1024 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MyBuildError);
    expect((err as MyBuildError).code).toBe('SIZE_EXCEEDED');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('keeps metadata members within the in-memory budget (the rest is spilled to the content store)', async () => {
    const store = await archiveStore();
    const tar = buildTar([{ name: 'f', data: 'x' }]);
    const junk = Buffer.alloc(1024 * 1024, 0x20);
    const members = 400;
    // a stream, so the archive itself is never held whole
    async function* archive(): AsyncGenerator<Buffer> {
      for (let i = 0; i < members; i++) yield tarEntry({ name: `meta/${i}.json`, data: junk });
      yield dockerArchive(tar, sha256Of(tar), 1);
    }
    const rss0 = process.memoryUsage().rss;
    let peak = 0;
    const sampler = setInterval(() => {
      peak = Math.max(peak, process.memoryUsage().rss - rss0);
    }, 5);
    try {
      const images = await loadArchive(store, Readable.from(archive(), { objectMode: false }), 'meta.tar');
      expect(images).toHaveLength(1);
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, process.memoryUsage().rss - rss0);
    expect(peak).toBeLessThan(200 * 1024 * 1024);
  }, 120_000);
});

