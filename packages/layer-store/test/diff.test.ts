/**
 * `writeLayer`: a directory → a deterministic layer blob in the store. Real files, real tars;
 * every layer is read back by the project's own `applyLayer` and by real peers (GNU tar,
 * umoci, the gzip and zstd CLIs, sha256 of the bytes on disk).
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  appendFileSync,
  chmodSync,
  chownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  symlinkSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { decompress as zstdDecompress } from 'zstd-napi';
import { type Compression, type Digest, MediaType, MyBuildError, sha256Of } from '@mybuild/oci';
import { applyLayer, layerTar, sys, writeLayer, type WriteLayerOptions, type WrittenLayer } from '@mybuild/layer-store';
import { createTarReader } from '../src/extract/tarReader.js';
import { encodeUstar, paxRecord, paxRecordsFor } from '../src/diff/tarHeader.js';
import { type CountingContentStore, type Layer, comparableTree, newStore, paxRecord as referencePaxRecord, rmrf, tempDir, writeOciLayout } from './helpers-tar.js';

/** security.capability v2: cap_setuid + cap_net_raw, effective. Binary, not UTF-8. */
const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x80, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const BINARY = Buffer.from([0xff, 0x00, 0xfe, 0x80]);
const T = 1_600_000_000;
const S_IFSOCK = 0o140000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;
const LONG_DIR = 'n'.repeat(120);
const LONG_FILE = 'm'.repeat(200);
const LONG_TARGET = `../${'t'.repeat(150)}/target`;
/** 3 MiB and a bit: crosses the 1 MiB chunks of the tar writer. */
const BIG = 3 * 1024 * 1024 + 123;

function pattern(size: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = seed || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/**
 * A tree with every entry type and attribute a layer carries: setuid/setgid/sticky, owners
 * (one above the ustar limit), binary xattrs (security.capability, user.*, trusted.*), hardlinks
 * across directories, symlinks (relative, absolute, dangling, long), devices, a fifo, a socket
 * (skipped), long and UTF-8 names, an empty and a multi-chunk file, whole-second mtimes.
 */
function makeTree(root: string): void {
  const file = (rel: string, data: string | Buffer, mode = 0o644, uid = 0, gid = 0): void => {
    writeFileSync(join(root, rel), data);
    chownSync(join(root, rel), uid, gid);
    chmodSync(join(root, rel), mode);
  };
  const dir = (rel: string, mode = 0o755, uid = 0, gid = 0): void => {
    mkdirSync(join(root, rel), { recursive: true });
    chownSync(join(root, rel), uid, gid);
    chmodSync(join(root, rel), mode);
  };
  dir('.');
  dir('bin');
  file('bin/su', 'su binary', 0o4755);
  file('bin/sgid', 'sgid', 0o2711, 0, 42);
  file('bin/ping', 'ping', 0o755);
  sys().lsetxattr(join(root, 'bin/ping'), 'security.capability', CAP);
  linkSync(join(root, 'bin/su'), join(root, 'bin/su-hard'));
  dir('sbin');
  linkSync(join(root, 'bin/su'), join(root, 'sbin/su'));
  dir('home', 0o755);
  sys().lsetxattr(join(root, 'home'), 'user.dir', Buffer.from('d'));
  dir('home/user', 0o750, 1234, 5678);
  file('home/user/file', 'hello', 0o640, 1234, 5678);
  sys().lsetxattr(join(root, 'home/user/file'), 'user.blob', BINARY);
  sys().lsetxattr(join(root, 'home/user/file'), 'user.text', Buffer.from('hi'));
  sys().lsetxattr(join(root, 'home/user/file'), 'trusted.t', Buffer.from('tv'));
  file('home/user/big-ids', 'x', 0o600, 3_000_000, 3_000_001);
  dir('tmp', 0o1777);
  dir('srv', 0o2775, 0, 50);
  dir('usr/lib');
  file('usr/lib/big.bin', pattern(BIG, 7));
  symlinkSync('usr/lib', join(root, 'lib'));
  symlinkSync('/etc/passwd', join(root, 'abs'));
  symlinkSync('no/such/thing', join(root, 'dangling'));
  symlinkSync(LONG_TARGET, join(root, 'long-link'));
  dir('dev');
  sys().mknod(join(root, 'dev/null'), S_IFCHR | 0o666, 1, 3);
  chmodSync(join(root, 'dev/null'), 0o666);
  sys().mknod(join(root, 'dev/sda'), S_IFBLK | 0o660, 8, 0);
  chmodSync(join(root, 'dev/sda'), 0o660);
  chownSync(join(root, 'dev/sda'), 0, 6);
  dir('run');
  sys().mknod(join(root, 'run/fifo'), S_IFIFO | 0o600, 0, 0);
  sys().mknod(join(root, 'run/socket'), S_IFSOCK | 0o755, 0, 0);
  dir(`deep/${LONG_DIR}`);
  file(`deep/${LONG_DIR}/${LONG_FILE}`, 'long name via PAX');
  dir('données');
  file('données/ünï.txt', 'utf-8');
  file('empty', '');
  // bytewise order: '-' < '.' < '/' < 'B' < 'a' < 'é' < U+E000 < '😀' (UTF-16 puts the emoji first)
  dir('order');
  for (const n of ['a.txt', 'a-b', 'B', 'é', '\ue000', '😀']) file(`order/${n}`, n);
  dir('order/a');
  file('order/a/x', 'x');
  // times last, deepest first (creating children changes a directory's mtime)
  const all: string[] = [];
  const walk = (rel: string): void => {
    for (const n of readdirSync(join(root, rel))) {
      const r = rel === '.' ? n : `${rel}/${n}`;
      all.push(r);
      if (lstatSync(join(root, r)).isDirectory()) walk(r);
    }
  };
  walk('.');
  all.sort((a, b) => b.split('/').length - a.split('/').length);
  all.forEach((r, i) => lutimesSync(join(root, r), T + i, T + i));
  utimesSync(root, T, T);
}

/** Headers and raw PAX records of every entry of a tar, in order. */
interface Listed {
  name: string;
  type: string;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  linkname: string | null;
  devmajor: number;
  devminor: number;
  uname: string;
  gname: string;
  pax: Map<string, Buffer>;
}

async function listTar(tar: Buffer): Promise<Listed[]> {
  const { extract, recordsFor } = await createTarReader();
  const out: Listed[] = [];
  extract.end(tar);
  for await (const entry of extract) {
    const h = entry.header;
    out.push({
      name: h.name,
      type: h.type ?? '',
      size: h.size ?? 0,
      mode: h.mode ?? 0,
      uid: h.uid ?? 0,
      gid: h.gid ?? 0,
      mtime: (h.mtime?.getTime() ?? 0) / 1000,
      linkname: h.linkname ?? null,
      devmajor: h.devmajor ?? 0,
      devminor: h.devminor ?? 0,
      uname: h.uname ?? '',
      gname: h.gname ?? '',
      pax: recordsFor(h),
    });
    entry.resume();
  }
  return out;
}

function sha256(data: Buffer): Digest {
  return sha256Of(data);
}

/** The uncompressed tar of a stored layer. */
function tarOf(store: CountingContentStore, l: WrittenLayer): Buffer {
  const blob = readFileSync(store.path(l.digest));
  if (l.compression === 'gzip') return gunzipSync(blob);
  if (l.compression === 'zstd') return zstdDecompress(blob);
  return blob;
}

/** The tree minus what a layer leaves out: the root itself (not an entry) and sockets. */
function expectedTree(dir: string): ReturnType<typeof comparableTree> {
  const t = comparableTree(dir, { mtimes: true });
  delete t.entries['.'];
  for (const [k, v] of Object.entries(t.entries)) if (v.type === 'socket') delete t.entries[k];
  return t;
}

function extractedTree(dir: string): ReturnType<typeof comparableTree> {
  const t = comparableTree(dir, { mtimes: true });
  delete t.entries['.'];
  return t;
}

describe('writeLayer', () => {
  let tmp: string;
  let store: CountingContentStore;
  let src: string;
  beforeEach(async () => {
    tmp = tempDir('mybuild-diff-');
    store = await newStore(join(tmp, 'store'));
    src = join(tmp, 'src');
    makeTree(src);
  });
  afterEach(() => rmrf(tmp));

  const write = (dir: string, opts: Partial<WriteLayerOptions> = {}): Promise<WrittenLayer> =>
    writeLayer(dir, { store, mode: 'plain', ...opts });

  it('reuses its chunk buffers without changing a byte: every compression equals the plain tar', async () => {
    // Many small chunks, so that buffers go round the pool hundreds of times.
    for (const chunkSize of [512, 8192]) {
      const expected = Buffer.concat([...layerTar(src, { mode: 'plain', chunkSize })].map((c) => Buffer.from(c)));
      for (const compression of ['none', 'gzip', 'zstd'] as const) {
        const l = await write(src, { compression, chunkSize });
        expect(tarOf(store, l).equals(expected), `${compression} with ${chunkSize}-byte chunks`).toBe(true);
        expect(l.diffId).toBe(`sha256:${createHash('sha256').update(expected).digest('hex')}`);
      }
    }
  });

  it('writes a tar docker and BuildKit would: order, names, PAX, links, uname/gname empty, no root entry', async () => {
    const l = await write(src, { compression: 'none' });
    expect(l.mediaType).toBe(MediaType.OciLayer);
    expect(l.diffId).toBe(l.digest);
    const entries = await listTar(tarOf(store, l));
    const names = entries.map((e) => e.name);
    expect(l.entries).toBe(entries.length);
    expect(names).not.toContain('./');
    expect(names).not.toContain('run/socket');
    // depth first, each directory's children in byte order, parents first
    expect(names.filter((n) => n.startsWith('order/'))).toEqual(['order/', 'order/B', 'order/a/', 'order/a/x', 'order/a-b', 'order/a.txt', 'order/é', 'order/\ue000', 'order/😀']);
    expect(names.slice(0, 6)).toEqual(['abs', 'bin/', 'bin/ping', 'bin/sgid', 'bin/su', 'bin/su-hard']);
    for (const e of entries) {
      expect(e.uname).toBe('');
      expect(e.gname).toBe('');
      const parent = e.name.replace(/\/$/, '').split('/').slice(0, -1).join('/');
      if (parent) expect(names.indexOf(`${parent}/`)).toBeLessThan(names.indexOf(e.name));
    }
    const at = (n: string): Listed => entries.find((e) => e.name === n)!;
    // hardlinks: to the first path in tar order
    expect(at('bin/su')).toMatchObject({ type: 'file', size: 9, mode: 0o4755 });
    expect(at('bin/su-hard')).toMatchObject({ type: 'link', linkname: 'bin/su', size: 0 });
    expect(at('sbin/su')).toMatchObject({ type: 'link', linkname: 'bin/su' });
    expect(at('bin/sgid')).toMatchObject({ mode: 0o2711, gid: 42 });
    expect(at('tmp/')).toMatchObject({ type: 'directory', mode: 0o1777 });
    expect(at('dev/null')).toMatchObject({ type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 });
    expect(at('dev/sda')).toMatchObject({ type: 'block-device', devmajor: 8, devminor: 0, gid: 6 });
    expect(at('run/fifo')).toMatchObject({ type: 'fifo', mode: 0o600 });
    expect(at('lib')).toMatchObject({ type: 'symlink', linkname: 'usr/lib' });
    expect(at('long-link')).toMatchObject({ type: 'symlink', linkname: LONG_TARGET });
    expect(at('long-link').pax.get('linkpath')?.toString()).toBe(LONG_TARGET);
    expect(at(`deep/${LONG_DIR}/${LONG_FILE}`).pax.get('path')?.toString()).toBe(`deep/${LONG_DIR}/${LONG_FILE}`);
    expect(at('données/ünï.txt').pax.get('path')?.toString()).toBe('données/ünï.txt');
    expect(at('home/user/big-ids').pax.get('uid')?.toString()).toBe('3000000');
    expect(at('home/user/big-ids').pax.get('gid')?.toString()).toBe('3000001');
    // xattrs as SCHILY.xattr.*, binary values intact, sorted; nothing for files without
    expect(at('bin/ping').pax.get('SCHILY.xattr.security.capability')).toEqual(CAP);
    expect([...at('home/user/file').pax.keys()]).toEqual(['SCHILY.xattr.trusted.t', 'SCHILY.xattr.user.blob', 'SCHILY.xattr.user.text']);
    expect(at('home/user/file').pax.get('SCHILY.xattr.user.blob')).toEqual(BINARY);
    expect(at('home/').pax.get('SCHILY.xattr.user.dir')?.toString()).toBe('d');
    expect(at('bin/su').pax.size).toBe(0);
    // mtimes kept (whole seconds); the tar ends with two zero blocks
    expect(at('empty').mtime).toBeGreaterThan(T);
    const tar = tarOf(store, l);
    expect(tar.length % 512).toBe(0);
    expect(tar.subarray(tar.length - 1024).equals(Buffer.alloc(1024))).toBe(true);
  });

  it.each<[Compression, number | undefined]>([
    ['none', undefined],
    ['gzip', 1],
    ['gzip', 6],
    ['zstd', 3],
  ])('round-trips every entry type and attribute through applyLayer (%s %s)', async (compression, level) => {
    const l = await write(src, { compression, ...(level === undefined ? {} : { level }) });
    const out = join(tmp, 'out');
    const res = await applyLayer(Readable.from([readFileSync(store.path(l.digest))]), out, { mode: 'flatten', diffId: l.diffId });
    expect(res.size).toBe(l.uncompressedSize);
    expect(res.compression).toBe(compression);
    expect(extractedTree(out)).toEqual(expectedTree(src));
    expect(expectedTree(src).hardlinks).toEqual([['bin/su', 'bin/su-hard', 'sbin/su']]);
  });

  it('round-trips through GNU tar (tar --xattrs -xpf) and reads the same listing with tar -tv', async () => {
    const l = await write(src, { compression: 'gzip' });
    const out = join(tmp, 'gnu');
    mkdirSync(out);
    execFileSync('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpzf', store.path(l.digest), '-C', out]);
    expect(extractedTree(out)).toEqual(expectedTree(src));
    const listing = execFileSync('tar', ['--numeric-owner', '-tvzf', store.path(l.digest)], { encoding: 'utf8' });
    expect(listing).toMatch(/^crw-rw-rw- 0\/0 +1,3 .* dev\/null$/m);
    expect(listing).toMatch(/^brw-rw---- 0\/6 +8,0 .* dev\/sda$/m);
    expect(listing).toMatch(/^prw------- 0\/0 .* run\/fifo$/m);
    expect(listing).toMatch(/^hrwsr-xr-x 0\/0 .* sbin\/su link to bin\/su$/m);
    expect(listing).toMatch(/^drwxrwxrwt 0\/0 .* tmp\/$/m);
    expect(listing).toMatch(/^-rw------- 3000000\/3000001 .* home\/user\/big-ids$/m);
    expect(listing).not.toMatch(/PaxHeaders/);
  });

  it('round-trips through umoci raw unpack of an OCI layout', async () => {
    const l = await write(src, { compression: 'gzip' }); // this umoci knows no zstd layers
    const blob = readFileSync(store.path(l.digest));
    const layer: Layer = { tar: Buffer.alloc(0), blob, diffId: l.diffId, desc: { mediaType: l.mediaType, digest: l.digest, size: l.size } };
    const layout = join(tmp, 'layout');
    writeOciLayout(layout, [layer], 'test');
    const out = join(tmp, 'umoci');
    execFileSync('umoci', ['raw', 'unpack', '--image', `${layout}:test`, out], { stdio: 'pipe' });
    const theirs = extractedTree(out);
    const mine = expectedTree(src);
    // umoci unpacks onto a root it creates itself; compare what the layer holds
    expect(Object.keys(theirs.entries).sort()).toEqual(Object.keys(mine.entries).sort());
    for (const p of Object.keys(mine.entries)) expect({ p, ...theirs.entries[p] }).toEqual({ p, ...mine.entries[p] });
    expect(theirs.hardlinks).toEqual(mine.hardlinks);
  });

  it('digests match an independent sha256 of the blob and of its decompression by the gzip and zstd CLIs', async () => {
    const tarLayer = await write(src, { compression: 'none' });
    const tar = readFileSync(store.path(tarLayer.digest));
    expect(sha256(tar)).toBe(tarLayer.digest);
    expect(tarLayer.size).toBe(tar.length);
    expect(tarLayer.uncompressedSize).toBe(tar.length);
    for (const [compression, cli] of [
      ['gzip', 'gzip'],
      ['zstd', 'zstd'],
    ] as const) {
      const l = await write(src, { compression });
      const blob = readFileSync(store.path(l.digest));
      expect(sha256(blob)).toBe(l.digest);
      expect(l.size).toBe(blob.length);
      const plain = execFileSync(cli, ['-dc', store.path(l.digest)], { maxBuffer: 64 << 20 });
      expect(sha256(plain)).toBe(l.diffId);
      expect(l.diffId).toBe(tarLayer.diffId);
      expect(l.uncompressedSize).toBe(plain.length);
      if (cli === 'zstd') execFileSync('zstd', ['-tq', store.path(l.digest)]); // frame checksum
    }
  });

  it('names its media types by compression and family', async () => {
    expect((await write(src, { compression: 'gzip' })).mediaType).toBe(MediaType.OciLayerGzip);
    expect((await write(src, { compression: 'zstd' })).mediaType).toBe(MediaType.OciLayerZstd);
    expect((await write(src, { compression: 'gzip', docker: true })).mediaType).toBe(MediaType.DockerLayerGzip);
    expect((await write(src, { compression: 'none', docker: true })).mediaType).toBe(MediaType.DockerLayer);
    expect((await write(src)).compression).toBe('gzip');
  });

  describe('determinism', () => {
    it('gives the same digests for the same tree, wherever it lives and however its inodes are numbered', async () => {
      const copy = join(tmp, 'elsewhere/copy');
      mkdirSync(join(tmp, 'elsewhere'));
      // cp -a: new inodes, new directory order on disk, same names/contents/metadata/links
      execFileSync('cp', ['-a', '--preserve=all', src, copy]);
      for (const compression of ['none', 'gzip', 'zstd'] as const) {
        const a = await write(src, { compression });
        const b = await write(src, { compression });
        const c = await write(copy, { compression });
        expect(b).toEqual(a);
        expect(c).toEqual(a);
      }
    });

    it('changes with an mtime, unless SOURCE_DATE_EPOCH clamps both', async () => {
      const a = await write(src, { compression: 'gzip' });
      utimesSync(join(src, 'bin/ping'), T + 5000, T + 5000);
      const b = await write(src, { compression: 'gzip' });
      expect(b.diffId).not.toBe(a.diffId);
      expect(b.digest).not.toBe(a.digest);

      const epoch = T - 100;
      const c = await write(src, { compression: 'gzip', sourceDateEpoch: epoch });
      utimesSync(join(src, 'bin/ping'), T + 9999, T + 9999);
      const d = await write(src, { compression: 'gzip', sourceDateEpoch: epoch });
      expect(d.diffId).toBe(c.diffId);
      expect(d.digest).toBe(c.digest);
      const entries = await listTar(tarOf(store, d));
      expect(new Set(entries.map((e) => e.mtime))).toEqual(new Set([epoch]));
    });

    it('clamps only what is newer than SOURCE_DATE_EPOCH', async () => {
      utimesSync(join(src, 'empty'), 1000, 1000);
      const l = await write(src, { compression: 'none', sourceDateEpoch: T + 3 });
      const entries = await listTar(tarOf(store, l));
      expect(entries.find((e) => e.name === 'empty')?.mtime).toBe(1000);
      expect(Math.max(...entries.map((e) => e.mtime))).toBe(T + 3);
    });
  });

  describe('overlay upper dirs', () => {
    /** An upper dir as overlayfs leaves it, made by hand: whiteout devices and opaque xattrs. */
    function makeUpper(root: string): void {
      mkdirSync(join(root, 'etc'), { recursive: true });
      writeFileSync(join(root, 'etc/hostname'), 'box\n');
      execFileSync('mknod', [join(root, 'etc/passwd'), 'c', '0', '0']);
      // overlay links every whiteout to one inode in its workdir: nlink > 1, yet no hardlink entries
      linkSync(join(root, 'etc/passwd'), join(root, 'etc/group'));
      mkdirSync(join(root, 'var/cache'), { recursive: true });
      execFileSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'y', join(root, 'var/cache')]);
      writeFileSync(join(root, 'var/cache/-first'), 'sorts before the marker by name');
      writeFileSync(join(root, 'var/cache/new'), 'new');
      // overlay-internal xattrs that are not layer content
      execFileSync('setfattr', ['-n', 'trusted.overlay.origin', '-v', '0sAPsdAAE=', join(root, 'etc/hostname')]);
      execFileSync('setfattr', ['-n', 'trusted.overlay.impure', '-v', 'y', join(root, 'etc')]);
      sys().lsetxattr(join(root, 'etc/hostname'), 'user.keep', Buffer.from('k'));
      // an opaque value of "x" (kernel 6.7+: holds xwhiteouts) is not opaque
      mkdirSync(join(root, 'srv'));
      execFileSync('setfattr', ['-n', 'trusted.overlay.opaque', '-v', 'x', join(root, 'srv')]);
      for (const p of ['etc/passwd', 'etc/hostname', 'var/cache/new', 'var/cache/-first']) lutimesSync(join(root, p), T, T);
      for (const p of ['etc', 'var/cache', 'var', 'srv']) utimesSync(join(root, p), T, T);
    }

    it('turns whiteout devices into .wh. files and opaque directories into .wh..wh..opq right after them', async () => {
      const upper = join(tmp, 'upper');
      makeUpper(upper);
      const l = await write(upper, { mode: 'overlay-upper', compression: 'gzip' });
      const entries = await listTar(tarOf(store, l));
      expect(entries.map((e) => e.name)).toEqual([
        'etc/',
        'etc/.wh.group',
        'etc/.wh.passwd',
        'etc/hostname',
        'srv/',
        'var/',
        'var/cache/',
        'var/cache/.wh..wh..opq',
        'var/cache/-first',
        'var/cache/new',
      ]);
      const at = (n: string): Listed => entries.find((e) => e.name === n)!;
      expect(at('etc/.wh.passwd')).toMatchObject({ type: 'file', size: 0, mode: 0o600, mtime: T });
      expect(at('etc/.wh.group')).toMatchObject({ type: 'file', size: 0 });
      expect(at('var/cache/.wh..wh..opq')).toMatchObject({ type: 'file', size: 0, mode: 0o755, mtime: T });
      // no overlay xattr leaks into the layer; layer xattrs stay
      for (const e of entries) for (const k of e.pax.keys()) expect(k).not.toMatch(/overlay/);
      expect(at('etc/hostname').pax.get('SCHILY.xattr.user.keep')?.toString()).toBe('k');
      // GNU tar sees the same
      const listing = execFileSync('tar', ['-tzf', store.path(l.digest)], { encoding: 'utf8' });
      expect(listing.split('\n')).toContain('var/cache/.wh..wh..opq');

      // and our extractor turns them back into overlay whiteouts
      const back = join(tmp, 'back');
      await applyLayer(Readable.from([readFileSync(store.path(l.digest))]), back, { mode: 'overlay' });
      const tree = extractedTree(back).entries;
      expect(tree['etc/passwd']).toMatchObject({ type: 'char', rdev: [0, 0] });
      expect(tree['var/cache']?.xattrs).toEqual({ 'trusted.overlay.opaque': Buffer.from('y').toString('hex') });
      expect(tree['srv']?.xattrs).toEqual({});
    });

    it('in plain mode converts nothing and drops overlay xattrs', async () => {
      const upper = join(tmp, 'upper');
      makeUpper(upper);
      const l = await write(upper, { mode: 'plain', compression: 'none' });
      const entries = await listTar(tarOf(store, l));
      const names = entries.map((e) => e.name);
      expect(names).not.toContain('var/cache/.wh..wh..opq');
      expect(entries.find((e) => e.name === 'etc/group')).toMatchObject({ type: 'character-device', devmajor: 0, devminor: 0 });
      expect(entries.find((e) => e.name === 'etc/passwd')).toMatchObject({ type: 'link', linkname: 'etc/group' });
      for (const e of entries) for (const k of e.pax.keys()) expect(k).not.toMatch(/overlay/);
    });

    it('applies over a lower layer like an overlay mount would (umoci and applyLayer flatten)', async () => {
      // lower: a plain directory; upper deletes etc/passwd, replaces var/cache, adds etc/hostname
      const lower = join(tmp, 'lower');
      mkdirSync(join(lower, 'etc'), { recursive: true });
      mkdirSync(join(lower, 'var/cache/old'), { recursive: true });
      writeFileSync(join(lower, 'etc/passwd'), 'root');
      writeFileSync(join(lower, 'etc/group'), 'root');
      writeFileSync(join(lower, 'etc/motd'), 'hi');
      writeFileSync(join(lower, 'var/cache/old/x'), 'x');
      const upper = join(tmp, 'upper');
      makeUpper(upper);
      const l1 = await write(lower, { compression: 'gzip' });
      const l2 = await write(upper, { mode: 'overlay-upper', compression: 'gzip' });
      const layers: Layer[] = [l1, l2].map((l) => ({ tar: Buffer.alloc(0), blob: readFileSync(store.path(l.digest)), diffId: l.diffId, desc: { mediaType: l.mediaType, digest: l.digest, size: l.size } }));
      const layout = join(tmp, 'layout');
      writeOciLayout(layout, layers, 'test');
      const theirs = join(tmp, 'umoci');
      execFileSync('umoci', ['raw', 'unpack', '--image', `${layout}:test`, theirs], { stdio: 'pipe' });
      const ours = join(tmp, 'ours');
      for (const l of [l1, l2]) await applyLayer(Readable.from([readFileSync(store.path(l.digest))]), ours, { mode: 'flatten' });
      for (const root of [theirs, ours]) {
        expect(readdirSync(join(root, 'etc')).sort()).toEqual(['hostname', 'motd']);
        expect(readdirSync(join(root, 'var/cache')).sort()).toEqual(['-first', 'new']);
      }
      const a = extractedTree(ours);
      const b = extractedTree(theirs);
      expect(Object.keys(a.entries).sort()).toEqual(Object.keys(b.entries).sort());
    });

    it('refuses an upper dir with an overlay redirect or metacopy xattr (mount options not honoured)', async () => {
      const upper = join(tmp, 'upper');
      makeUpper(upper);
      mkdirSync(join(upper, 'moved'));
      execFileSync('setfattr', ['-n', 'trusted.overlay.redirect', '-v', '/orig', join(upper, 'moved')]);
      const err = await write(upper, { mode: 'overlay-upper' }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(MyBuildError);
      expect((err as MyBuildError).code).toBe('FAILED_PRECONDITION');
      expect((err as MyBuildError).message).toMatch(/"moved" has the overlay xattr trusted\.overlay\.redirect/);
      expect((err as MyBuildError).hint).toMatch(/redirect_dir=off/);

      rmrf(join(upper, 'moved'));
      execFileSync('setfattr', ['-n', 'trusted.overlay.metacopy', '-v', '', join(upper, 'etc/hostname')]);
      const err2 = await write(upper, { mode: 'overlay-upper' }).catch((e: unknown) => e);
      expect((err2 as MyBuildError).code).toBe('FAILED_PRECONDITION');
      expect((err2 as MyBuildError).hint).toMatch(/metacopy=off/);
      // nothing was left behind in the store
      expect(await store.ingests()).toEqual([]);
      // a plain directory carries no overlay meaning: its copies of the xattrs are dropped
      await expect(write(upper, { mode: 'plain' })).resolves.toBeDefined();
    });

    it('honours user.overlay.* xattrs for userxattr mounts', async () => {
      const upper = join(tmp, 'upper');
      mkdirSync(join(upper, 'd'), { recursive: true });
      sys().lsetxattr(join(upper, 'd'), 'user.overlay.opaque', Buffer.from('y'));
      const l = await write(upper, { mode: 'overlay-upper', overlayXattrs: 'user', compression: 'none' });
      const entries = await listTar(tarOf(store, l));
      expect(entries.map((e) => e.name)).toEqual(['d/', 'd/.wh..wh..opq']);
      expect(entries[0]!.pax.size).toBe(0);
      const trusted = await write(upper, { mode: 'overlay-upper', compression: 'none' });
      expect((await listTar(tarOf(store, trusted))).map((e) => e.name)).toEqual(['d/']);
    });
  });

  describe('refusals', () => {
    it('refuses a real file named like a whiteout', async () => {
      writeFileSync(join(src, 'bin/.wh.sneaky'), '');
      const err = await write(src).catch((e: unknown) => e);
      expect((err as MyBuildError).code).toBe('UNSUPPORTED');
      expect((err as MyBuildError).message).toMatch(/bin\/\.wh\.sneaky/);
      expect(await store.ingests()).toEqual([]);
    });

    it('refuses a file name that is not UTF-8', async () => {
      writeFileSync(Buffer.concat([Buffer.from(`${src}/bin/`), Buffer.from([0x66, 0xff, 0x66])]), 'x');
      const err = await write(src).catch((e: unknown) => e);
      expect((err as MyBuildError).code).toBe('UNSUPPORTED');
      expect((err as MyBuildError).message).toMatch(/not valid UTF-8/);
    });

    it('refuses a source that is not a directory, and bad options', async () => {
      await expect(write(join(src, 'empty'))).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(write(join(tmp, 'missing'))).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
      await expect(write(src, { compression: 'gzip', level: 10 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(write(src, { compression: 'zstd', level: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(write(src, { sourceDateEpoch: -1 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      await expect(write(src, { mode: 'upper' as never })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    });

    it('fails, instead of writing a corrupt tar, when a file shrinks or grows under it', () => {
      const dir = join(tmp, 'changing');
      mkdirSync(dir);
      writeFileSync(join(dir, 'f'), 'x'.repeat(100));
      // 512-byte chunks: the generator stops after the header, before it reads the data
      const shrink = layerTar(dir, { mode: 'plain', chunkSize: 512 });
      expect(shrink.next().value).toHaveLength(512);
      truncateSync(join(dir, 'f'), 10);
      expect(() => shrink.next()).toThrow(/"f" shrank while the layer was written/);

      writeFileSync(join(dir, 'f'), 'x'.repeat(100));
      const grow = layerTar(dir, { mode: 'plain', chunkSize: 512 });
      grow.next();
      appendFileSync(join(dir, 'f'), 'more');
      expect(() => grow.next()).toThrow(/"f" grew while the layer was written/);
    });
  });

  it('keeps mtimes before 1970 and past the ustar field (year 2242) through PAX', async () => {
    const dir = join(tmp, 'times');
    mkdirSync(dir);
    writeFileSync(join(dir, 'old'), 'o');
    writeFileSync(join(dir, 'future'), 'f');
    execFileSync('touch', ['-h', '-d', '@-86400', join(dir, 'old')]); // Node's utimes takes a negative time as "now"
    utimesSync(join(dir, 'future'), 9_000_000_000, 9_000_000_000);
    const l = await write(dir, { compression: 'none' });
    const entries = await listTar(tarOf(store, l));
    expect(entries.find((e) => e.name === 'old')?.pax.get('mtime')?.toString()).toBe('-86400');
    expect(entries.find((e) => e.name === 'future')?.pax.get('mtime')?.toString()).toBe('9000000000');
    const out = join(tmp, 'out');
    await applyLayer(Readable.from([readFileSync(store.path(l.digest))]), out, { mode: 'flatten' });
    expect(lstatSync(join(out, 'old')).mtimeMs).toBe(-86_400_000);
    expect(lstatSync(join(out, 'future')).mtimeMs).toBe(9_000_000_000_000);
    const gnu = join(tmp, 'gnu');
    mkdirSync(gnu);
    execFileSync('tar', ['-xpf', store.path(l.digest), '-C', gnu]);
    expect(lstatSync(join(gnu, 'old')).mtimeMs).toBe(-86_400_000);
    expect(lstatSync(join(gnu, 'future')).mtimeMs).toBe(9_000_000_000_000);
  });

  it('encodes PAX records and ustar headers byte-exactly', async () => {
    // record lengths across digit-count boundaries (9→10, 99→100, 999→1000 bytes)
    for (let n = 0; n < 1100; n++) expect(paxRecord('k', 'v'.repeat(n))).toEqual(referencePaxRecord('k', 'v'.repeat(n)));
    // sizes past the 11-digit octal field (8 GiB) go to PAX; the ustar field says 0
    const big = { name: 'huge', type: 'file' as const, mode: 0o644, uid: 0, gid: 0, size: 9 * 1024 ** 3, mtime: T };
    expect(paxRecordsFor(big).map((b) => b.toString())).toEqual([`19 size=${9 * 1024 ** 3}\n`]);
    const h = Buffer.alloc(512);
    encodeUstar(h, 0, { ...big, typeflag: '0' });
    expect(h.toString('latin1', 124, 136)).toBe('00000000000\0');
    // a header tar-stream (and so GNU tar's checksum rule) accepts, fields where they belong
    const [e] = await listTar(Buffer.concat([h, Buffer.alloc(1024)]));
    expect(e).toMatchObject({ name: 'huge', mode: 0o644, mtime: T, uname: '', gname: '' });
  });

  it('streams: memory stays bounded, far below the layer size', async () => {
    const dir = join(tmp, 'big');
    mkdirSync(dir);
    // compressible (a 16 KiB pattern repeated, within gzip's window), so that gzip and zstd run fast
    const chunk = Buffer.concat(Array.from({ length: 64 }, () => pattern(16 << 10, 3)));
    for (let i = 0; i < 128; i++) appendFileSync(join(dir, 'big.bin'), chunk);
    const diffIds = new Set<string>();
    for (const compression of ['none', 'gzip', 'zstd'] as const) {
      const before = process.memoryUsage().rss;
      let peak = before;
      const sample = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
      const l = await write(dir, { compression, level: 1 });
      clearInterval(sample);
      peak = Math.max(peak, process.memoryUsage().rss);
      expect(l.uncompressedSize).toBeGreaterThan(128 << 20);
      // 1 MiB tar chunks, 4 read ahead; zstd's worker holds a few jobs of its own (~50 MiB)
      expect(peak - before, compression).toBeLessThan(96 << 20);
      diffIds.add(l.diffId);
    }
    const h = createHash('sha256');
    for (const c of layerTar(dir, { mode: 'plain' })) h.update(c);
    expect([...diffIds]).toEqual([`sha256:${h.digest('hex')}`]);
  });
});
