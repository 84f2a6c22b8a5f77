import { execFileSync } from 'node:child_process';
import { chownSync, chmodSync, existsSync, linkSync, lstatSync, lutimesSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Compression, MyBuildError, sha256Of } from '@mybuild/oci';
import { applyLayer, sys } from '@mybuild/layer-store';
import { type TarEntry, buildTar, comparableTree, gzip, nodeInfo, rmrf, streamOf, tempDir, zstd } from './helpers-tar.js';

/** security.capability v2 granting cap_setuid (bit 7) and cap_net_raw (bit 13), effective: binary, not UTF-8. */
const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x80, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const BINARY_XATTR = Buffer.from([0xff, 0x00, 0xfe, 0x80]);

const fidelity: TarEntry[] = [
  { name: './', type: 'dir', mode: 0o755 },
  { name: 'bin/', type: 'dir', mode: 0o755 },
  { name: 'bin/su', data: 'su binary', mode: 0o4755 },
  { name: 'bin/sgid', data: 'sgid', mode: 0o2711, gid: 42 },
  { name: 'bin/ping', data: 'ping binary', mode: 0o755, xattrs: { 'security.capability': CAP } },
  { name: 'bin/su-hard', type: 'link', linkname: 'bin/su' },
  { name: 'home/', type: 'dir', mode: 0o755 },
  { name: 'home/user/', type: 'dir', mode: 0o750, uid: 1234, gid: 5678, mtime: 1_500_000_000 },
  { name: 'home/user/file', data: 'hello', mode: 0o640, uid: 1234, gid: 5678, mtime: 1_600_000_000.5, xattrs: { 'user.blob': BINARY_XATTR, 'user.text': 'hi' } },
  { name: 'home/user/big-pax', data: 'x', uid: 3_000_000, gid: 3_000_001 },
  { name: 'home/user/big-b256', data: 'y', uid: 2_100_000, gid: 2_100_001, base256Ids: true },
  { name: 'tmp/', type: 'dir', mode: 0o1777 },
  { name: 'srv/', type: 'dir', mode: 0o2775, gid: 50 },
  { name: 'usr/lib/', type: 'dir', mode: 0o755 },
  { name: 'lib', type: 'symlink', linkname: 'usr/lib', mtime: 1_400_000_000 },
  { name: 'abs', type: 'symlink', linkname: '/etc/passwd' },
  { name: 'dangling', type: 'symlink', linkname: 'no/such/thing' },
  { name: 'dev/', type: 'dir', mode: 0o755 },
  { name: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
  { name: 'dev/sda', type: 'block', mode: 0o660, devmajor: 8, devminor: 0, gid: 6 },
  { name: 'run/fifo', type: 'fifo', mode: 0o600 },
  { name: 'etc/', type: 'dir', mode: 0o755 },
  { name: 'etc/.wh.passwd', data: '' },
  { name: 'var/', type: 'dir', mode: 0o755 },
  { name: 'var/.wh..wh..opq', data: '' },
  { name: 'var/new', data: 'new' },
  { name: `deep/${'n'.repeat(120)}/${'m'.repeat(150)}`, data: 'long name via PAX' },
  { name: 'données/ünï.txt', data: 'utf-8' },
  { name: 'empty', data: '' },
];

describe('applyLayer', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = tempDir();
  });
  afterEach(() => rmrf(tmp));

  it('preserves types, modes, owners, xattrs, links, devices and times (overlay mode)', async () => {
    const tar = buildTar(fidelity);
    const root = join(tmp, 'root');
    const res = await applyLayer(streamOf(gzip(tar)), root, { mode: 'overlay' });
    expect(res.diffId).toBe(sha256Of(tar));
    expect(res.size).toBe(tar.length);
    expect(res.compression).toBe('gzip');
    const at = (p: string) => nodeInfo(join(root, p));

    expect(at('bin/su')).toMatchObject({ type: 'file', mode: 0o4755, uid: 0, gid: 0 });
    expect(readFileSync(join(root, 'bin/su'), 'utf8')).toBe('su binary');
    expect(at('bin/sgid')).toMatchObject({ mode: 0o2711, gid: 42 });
    expect(sys().lgetxattr(join(root, 'bin/ping'), 'security.capability')).toEqual(CAP);
    expect(at('bin/su-hard').ino).toBe(at('bin/su').ino);
    expect(at('bin/su').nlink).toBe(2);

    expect(at('home/user')).toMatchObject({ type: 'dir', mode: 0o750, uid: 1234, gid: 5678 });
    expect(at('home/user/file')).toMatchObject({ mode: 0o640, uid: 1234, gid: 5678 });
    expect(sys().lgetxattr(join(root, 'home/user/file'), 'user.blob')).toEqual(BINARY_XATTR);
    expect(sys().lgetxattr(join(root, 'home/user/file'), 'user.text')?.toString()).toBe('hi');
    expect(at('home/user/big-pax')).toMatchObject({ uid: 3_000_000, gid: 3_000_001 });
    expect(at('home/user/big-b256')).toMatchObject({ uid: 2_100_000, gid: 2_100_001 });

    // times: files (fractional PAX mtime), symlinks (lutimes), directories after their children
    expect(lstatSync(join(root, 'home/user/file')).mtimeMs).toBe(1_600_000_000_500);
    expect(lstatSync(join(root, 'lib')).mtimeMs).toBe(1_400_000_000_000);
    expect(lstatSync(join(root, 'home/user')).mtimeMs).toBe(1_500_000_000_000);

    expect(at('tmp')).toMatchObject({ type: 'dir', mode: 0o1777 });
    expect(at('srv')).toMatchObject({ mode: 0o2775, gid: 50 });
    expect(at('lib')).toMatchObject({ type: 'symlink', link: 'usr/lib' });
    expect(at('abs')).toMatchObject({ type: 'symlink', link: '/etc/passwd' });
    expect(at('dangling')).toMatchObject({ type: 'symlink', link: 'no/such/thing' });
    expect(at('dev/null')).toMatchObject({ type: 'char', rdev: [1, 3], mode: 0o666 });
    expect(at('dev/sda')).toMatchObject({ type: 'block', rdev: [8, 0], mode: 0o660, gid: 6 });
    expect(at('run/fifo')).toMatchObject({ type: 'fifo', mode: 0o600 });
    // implicit parent of run/fifo: 0755 root, whatever the umask
    expect(at('run')).toMatchObject({ type: 'dir', mode: 0o755, uid: 0 });

    // OCI whiteouts → overlay whiteouts
    expect(at('etc/passwd')).toMatchObject({ type: 'char', rdev: [0, 0] });
    expect(existsSync(join(root, 'etc/.wh.passwd'))).toBe(false);
    expect(sys().lgetxattr(join(root, 'var'), 'trusted.overlay.opaque')?.toString()).toBe('y');
    expect(readdirSync(join(root, 'var'))).toEqual(['new']);

    expect(readFileSync(join(root, `deep/${'n'.repeat(120)}/${'m'.repeat(150)}`), 'utf8')).toBe('long name via PAX');
    expect(readFileSync(join(root, 'données/ünï.txt'), 'utf8')).toBe('utf-8');
    expect(statSync(join(root, 'empty')).size).toBe(0);
  });

  it.each<[string, (b: Buffer) => Buffer, Compression | undefined, Compression]>([
    ['gzip, sniffed', gzip, undefined, 'gzip'],
    ['zstd, sniffed', zstd, undefined, 'zstd'],
    ['plain, sniffed', (b) => b, undefined, 'none'],
    ['zstd, declared', zstd, 'zstd', 'zstd'],
  ])('decompresses %s', async (_label, enc, declared, expected) => {
    const tar = buildTar([{ name: 'a/b', data: 'payload'.repeat(1000) }]);
    const res = await applyLayer(streamOf(enc(tar), 333), join(tmp, 'r'), { mode: 'flatten', ...(declared ? { compression: declared } : {}) });
    expect(res.compression).toBe(expected);
    expect(res.diffId).toBe(sha256Of(tar));
    expect(readFileSync(join(tmp, 'r/a/b'), 'utf8')).toBe('payload'.repeat(1000));
  });

  it('fails on a compression that does not match the data', async () => {
    const tar = buildTar([{ name: 'a', data: 'x' }]);
    await expect(applyLayer(streamOf(tar), join(tmp, 'r'), { mode: 'flatten', compression: 'gzip' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('checks the diffID', async () => {
    const tar = buildTar([{ name: 'a', data: 'x' }]);
    const wrong = sha256Of('something else');
    const err = await applyLayer(streamOf(gzip(tar)), join(tmp, 'r'), { mode: 'overlay', diffId: wrong }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MyBuildError);
    expect((err as MyBuildError).code).toBe('DIGEST_MISMATCH');
  });

  it('lets later duplicates win: file over file, dir over file, file over dir, file over symlink', async () => {
    const tar = buildTar([
      { name: 'f', data: 'first' },
      { name: 'f', data: 'second', mode: 0o600 },
      { name: 'd', data: 'a file first' },
      { name: 'd/', type: 'dir', mode: 0o711 },
      { name: 'd/child', data: 'c' },
      { name: 'x/', type: 'dir' },
      { name: 'x/inner', data: 'gone' },
      { name: 'x', data: 'now a file' },
      { name: 's', type: 'symlink', linkname: 'f' },
      { name: 's', data: 'not through the link' },
    ]);
    const root = join(tmp, 'r');
    await applyLayer(streamOf(tar), root, { mode: 'flatten' });
    expect(readFileSync(join(root, 'f'), 'utf8')).toBe('second');
    expect(nodeInfo(join(root, 'f')).mode).toBe(0o600);
    expect(nodeInfo(join(root, 'd'))).toMatchObject({ type: 'dir', mode: 0o711 });
    expect(readFileSync(join(root, 'x'), 'utf8')).toBe('now a file');
    expect(nodeInfo(join(root, 's')).type).toBe('file');
    expect(readFileSync(join(root, 's'), 'utf8')).toBe('not through the link');
  });

  it('flatten mode: whiteouts delete lower paths, opaque dirs keep only this layer, same-layer paths survive', async () => {
    const root = join(tmp, 'r');
    await applyLayer(
      streamOf(
        buildTar([
          { name: 'keep', data: 'k' },
          { name: 'gone', data: 'g' },
          { name: 'gonedir/', type: 'dir' },
          { name: 'gonedir/x', data: 'x' },
          { name: 'opq/', type: 'dir', mode: 0o700 },
          { name: 'opq/old', data: 'old' },
          { name: 'opq/olddir/', type: 'dir' },
          { name: 'opq/olddir/f', data: 'f' },
        ]),
      ),
      root,
      { mode: 'flatten' },
    );
    await applyLayer(
      streamOf(
        buildTar([
          { name: '.wh.gone', data: '' },
          { name: '.wh.gonedir', data: '' },
          { name: 'opq/', type: 'dir', mode: 0o750 },
          { name: 'opq/new', data: 'new' },
          { name: 'opq/.wh..wh..opq', data: '' },
          { name: 'fresh', data: 'same layer' },
          { name: '.wh.fresh', data: '' },
          { name: '.wh.never-existed', data: '' },
        ]),
      ),
      root,
      { mode: 'flatten' },
    );
    expect(readdirSync(root).sort()).toEqual(['fresh', 'keep', 'opq']);
    expect(readdirSync(join(root, 'opq'))).toEqual(['new']);
    expect(nodeInfo(join(root, 'opq')).mode).toBe(0o750);
    expect(sys().llistxattr(join(root, 'opq'))).toEqual([]);
  });

  it('overlay mode: implicit parent directories copy owner and mode from the lower layers', async () => {
    const lower = join(tmp, 'lower');
    await applyLayer(
      streamOf(
        buildTar([
          { name: 'tmp/', type: 'dir', mode: 0o1777 },
          { name: 'home/', type: 'dir', mode: 0o755 },
          { name: 'home/u/', type: 'dir', mode: 0o700, uid: 1000, gid: 1000 },
        ]),
      ),
      lower,
      { mode: 'overlay' },
    );
    const upper = join(tmp, 'upper');
    await applyLayer(
      streamOf(
        buildTar([
          { name: 'tmp/x', data: 'x' },
          { name: 'home/u/.profile', data: 'p', uid: 1000 },
          { name: 'other/y', data: 'y' },
        ]),
      ),
      upper,
      { mode: 'overlay', lowerDirs: [lower] },
    );
    expect(nodeInfo(join(upper, 'tmp'))).toMatchObject({ mode: 0o1777, uid: 0 });
    expect(nodeInfo(join(upper, 'home/u'))).toMatchObject({ mode: 0o700, uid: 1000, gid: 1000 });
    expect(nodeInfo(join(upper, 'other'))).toMatchObject({ mode: 0o755, uid: 0 });
  });

  it('merges a directory entry into an existing directory and replaces its xattrs', async () => {
    const root = join(tmp, 'r');
    mkdirSync(join(root, 'd'), { recursive: true });
    writeFileSync(join(root, 'd/keep'), 'k');
    sys().lsetxattr(join(root, 'd'), 'user.old', Buffer.from('1'));
    await applyLayer(streamOf(buildTar([{ name: 'd/', type: 'dir', mode: 0o701, xattrs: { 'user.new': '2' } }])), root, { mode: 'flatten' });
    expect(readFileSync(join(root, 'd/keep'), 'utf8')).toBe('k');
    expect(sys().llistxattr(join(root, 'd'))).toEqual(['user.new']);
    expect(nodeInfo(join(root, 'd')).mode).toBe(0o701);
  });

  it('drops overlayfs-private xattrs carried by the tar', async () => {
    const root = join(tmp, 'r');
    await applyLayer(
      streamOf(buildTar([{ name: 'd/', type: 'dir', xattrs: { 'trusted.overlay.redirect': '/etc', 'trusted.overlay.opaque': 'y', 'user.ok': '1' } }])),
      root,
      { mode: 'overlay' },
    );
    expect(sys().llistxattr(join(root, 'd'))).toEqual(['user.ok']);
  });

  it('refuses unsupported entry types with one clear error', async () => {
    const err = await applyLayer(streamOf(buildTar([{ name: 'sparse', typeflag: 'S', data: 'x' }])), join(tmp, 'r'), { mode: 'overlay' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'UNSUPPORTED' });
    expect((err as MyBuildError).oneLine()).toContain('"sparse"');
  });

  it.each(['pax', 'gnu'])('round-trips a tree archived by GNU tar (%s format)', async (format) => {
    const src = join(tmp, 'src');
    mkdirSync(join(src, 'bin'), { recursive: true });
    writeFileSync(join(src, 'bin/su'), 'su');
    chmodSync(join(src, 'bin/su'), 0o4755);
    writeFileSync(join(src, 'bin/ping'), 'ping');
    linkSync(join(src, 'bin/su'), join(src, 'bin/su-hard'));
    symlinkSync('../etc/none', join(src, 'bin/dangling'));
    const long = join(src, 'l'.repeat(120), 'm'.repeat(130));
    mkdirSync(long, { recursive: true });
    writeFileSync(join(long, 'f'.repeat(100)), 'long');
    linkSync(join(long, 'f'.repeat(100)), join(src, 'hard-to-long'));
    mkdirSync(join(src, 'home/u'), { recursive: true });
    writeFileSync(join(src, 'home/u/file'), 'u');
    chownSync(join(src, 'home/u/file'), 1234, 5678);
    chownSync(join(src, 'home/u'), 1234, 5678);
    chmodSync(join(src, 'home/u'), 0o700);
    sys().mknod(join(src, 'null'), 0o020666, 1, 3);
    sys().mknod(join(src, 'fifo'), 0o010600, 0, 0);
    chmodSync(join(src, 'null'), 0o666);
    if (format === 'pax') {
      sys().lsetxattr(join(src, 'bin/ping'), 'security.capability', CAP);
      sys().lsetxattr(join(src, 'home/u/file'), 'user.blob', BINARY_XATTR);
    }
    lutimesSync(join(src, 'bin/dangling'), 1_000_000, 1_000_000);
    for (const d of ['bin', 'home/u', 'home', '.']) utimesSync(join(src, d), 1_500_000_000, 1_500_000_000);
    const tarFile = join(tmp, 'layer.tar');
    const xattrArgs = format === 'pax' ? ['--xattrs', '--xattrs-include=*'] : [];
    execFileSync('tar', ['-C', src, `--format=${format}`, ...xattrArgs, '--numeric-owner', '-cf', tarFile, '.']);

    const out = join(tmp, 'out');
    await applyLayer(streamOf(readFileSync(tarFile)), out, { mode: 'flatten' });
    const mine = comparableTree(out, { mtimes: true });
    const theirs = comparableTree(src, { mtimes: true });
    // gnu format has whole seconds only
    const round = (t: ReturnType<typeof comparableTree>) =>
      format === 'gnu' ? Object.fromEntries(Object.entries(t.entries).map(([k, v]) => [k, { ...v, mtime: Math.floor((v.mtime ?? 0) / 1000) }])) : t.entries;
    expect(round(mine)).toEqual(round(theirs));
    expect(mine.hardlinks).toEqual(theirs.hardlinks);
    expect(mine.hardlinks).toHaveLength(2);
  });

  it('streams a large file without buffering it', async () => {
    const big = Buffer.alloc(48 * 1024 * 1024, 7);
    const tar = buildTar([{ name: 'big', data: big }]);
    const before = process.memoryUsage().rss;
    const res = await applyLayer(streamOf(gzip(tar)), join(tmp, 'r'), { mode: 'overlay' });
    expect(res.diffId).toBe(sha256Of(tar));
    expect(statSync(join(tmp, 'r/big')).size).toBe(big.length);
    expect(process.memoryUsage().rss - before).toBeLessThan(200 * 1024 * 1024);
  });
});
