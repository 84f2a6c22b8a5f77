/**
 * `unpackImage` against the reference: `umoci raw unpack` of the same OCI layout must give the
 * same tree (types, modes, owners, sizes, content, link targets, device numbers, xattrs,
 * hardlink groups, mtimes).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MyBuildError, sha256Of } from '@mybuild/oci';
import { unpackImage } from '@mybuild/layer-store';
import { type CountingContentStore, type Layer, comparableTree, makeLayer, newStore, putLayers, rmrf, tempDir, writeOciLayout } from './helpers-tar.js';

const CAP = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x80, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const T1 = 1_600_000_000;
const T2 = 1_650_000_000;
const T3 = 1_700_000_000;

function parityLayers(): Layer[] {
  const l1 = makeLayer([
    { name: './', type: 'dir', mode: 0o755, mtime: T1 },
    { name: 'bin/', type: 'dir', mtime: T1 },
    { name: 'bin/sh', data: '#!/bin/sh\n', mode: 0o755, mtime: T1 },
    { name: 'bin/su', data: 'su', mode: 0o4755, mtime: T1 },
    { name: 'bin/wall', data: 'wall', mode: 0o2755, gid: 5, mtime: T1 },
    { name: 'bin/ping', data: 'ping', mode: 0o755, xattrs: { 'security.capability': CAP }, mtime: T1 },
    { name: 'bin/sh-hard', type: 'link', linkname: 'bin/sh', mtime: T1 },
    { name: 'bin/arping', data: 'arping', mode: 0o755, xattrs: { 'security.capability': CAP }, mtime: T1 },
    { name: 'bin/xattrs', data: 'x', xattrs: { 'user.bin': Buffer.from([0xfe, 0x00, 0x81]), 'user.txt': 'text', 'trusted.t': 'tv' }, mtime: T1 },
    { name: 'bin/xdir/', type: 'dir', xattrs: { 'user.dir': 'd' }, mtime: T1 },
    { name: 'usr/', type: 'dir', mtime: T1 },
    { name: 'usr/lib/', type: 'dir', mtime: T1 },
    { name: 'usr/lib/libc.so', data: 'libc', mtime: T1 },
    { name: 'lib', type: 'symlink', linkname: 'usr/lib', mtime: T1 },
    { name: 'etc/', type: 'dir', mtime: T1 },
    { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n', mtime: T1 },
    { name: 'etc/shadow', data: 'root:*::', mode: 0o640, gid: 42, mtime: T1 },
    { name: 'etc/abs', type: 'symlink', linkname: '/etc/passwd', mtime: T1 },
    { name: 'etc/dangling', type: 'symlink', linkname: '../nowhere', mtime: T1 },
    { name: 'home/', type: 'dir', mtime: T1 },
    { name: 'home/user/', type: 'dir', mode: 0o750, uid: 1234, gid: 5678, mtime: T1 },
    { name: 'home/user/.bashrc', data: 'PS1=$ ', uid: 1234, gid: 5678, xattrs: { 'user.note': Buffer.from([0xff, 0x00, 0x80]) }, mtime: T1 },
    { name: 'tmp/', type: 'dir', mode: 0o1777, mtime: T1 },
    { name: 'dev/', type: 'dir', mtime: T1 },
    { name: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3, mtime: T1 },
    { name: 'dev/sda', type: 'block', mode: 0o660, devmajor: 8, devminor: 0, gid: 6, mtime: T1 },
    { name: 'run/', type: 'dir', mtime: T1 },
    { name: 'run/initctl', type: 'fifo', mode: 0o600, mtime: T1 },
    { name: 'big-uid', data: 'b', uid: 3_000_000, gid: 3_000_001, mtime: T1 },
    { name: 'var/', type: 'dir', mtime: T1 },
    { name: 'var/cache/', type: 'dir', mtime: T1 },
    { name: 'var/cache/a', data: 'a', mtime: T1 },
    { name: 'var/cache/sub/', type: 'dir', mtime: T1 },
    { name: 'var/cache/sub/b', data: 'b', mtime: T1 },
    { name: 'opt/', type: 'dir', mtime: T1 },
    { name: 'opt/app/', type: 'dir', mtime: T1 },
    { name: 'opt/app/old', data: 'old', mtime: T1 },
    { name: 'srv/', type: 'dir', mtime: T1 },
    { name: 'srv/dir-to-file/', type: 'dir', mtime: T1 },
    { name: 'srv/dir-to-file/x', data: 'x', mtime: T1 },
    { name: 'srv/file-to-dir', data: 'f', mtime: T1 },
    { name: 'srv/link-to-file', type: 'symlink', linkname: 'dir-to-file', mtime: T1 },
    { name: `srv/${'long-'.repeat(30)}/`, type: 'dir', mtime: T1 },
    { name: `srv/${'long-'.repeat(30)}/${'name-'.repeat(35)}`, data: 'long', mtime: T1 },
    { name: 'srv/données-ünï', data: 'utf8', mtime: T1 },
  ]);
  const l2 = makeLayer([
    { name: './', type: 'dir', mode: 0o755, mtime: T2 },
    { name: 'etc/', type: 'dir', mtime: T2 },
    { name: 'etc/.wh.shadow', data: '' },
    { name: 'etc/passwd', data: 'root:x:0:0::/root:/bin/bash\n', mtime: T2 },
    { name: 'etc/passwd-hard', type: 'link', linkname: 'etc/passwd', mtime: T2 },
    { name: '.wh.opt', data: '' },
    { name: 'var/', type: 'dir', mtime: T2 },
    { name: 'var/cache/', type: 'dir', mode: 0o700, mtime: T2 },
    { name: 'var/cache/.wh..wh..opq', data: '' },
    { name: 'var/cache/new', data: 'new', mtime: T2 },
    { name: 'srv/', type: 'dir', mtime: T2 },
    { name: 'srv/dir-to-file', data: 'now a file', mtime: T2 },
    { name: 'srv/file-to-dir/', type: 'dir', mode: 0o711, mtime: T2 },
    { name: 'srv/file-to-dir/y', data: 'y', mtime: T2 },
    { name: 'srv/link-to-file', data: 'was a link', mtime: T2 },
    { name: 'usr/', type: 'dir', mtime: T2 },
    { name: 'usr/lib/', type: 'dir', mtime: T2 },
    { name: 'lib/added', data: 'written through the lib symlink', mtime: T2 },
    { name: 'bin/', type: 'dir', mtime: T2 },
    { name: 'bin/sh-hard2', type: 'link', linkname: 'bin/sh', mtime: T2 },
    { name: 'home/', type: 'dir', mtime: T2 },
    { name: 'home/user/', type: 'dir', mode: 0o700, uid: 1234, gid: 5678, mtime: T2 },
    { name: 'home/user/.bashrc', data: 'PS1=# ', uid: 1234, gid: 5678, mtime: T2 },
  ]);
  const l3 = makeLayer(
    [
      { name: './', type: 'dir', mode: 0o755, mtime: T3 },
      { name: 'bin/', type: 'dir', mtime: T3 },
      { name: 'bin/.wh.ping', data: '' },
      { name: 'usr/', type: 'dir', mtime: T3 },
      { name: 'usr/lib/', type: 'dir', mtime: T3 },
      { name: 'usr/lib/.wh..wh..opq', data: '' },
      { name: 'usr/lib/libnew.so', data: 'new lib', mtime: T3 },
      { name: 'new-dir/', type: 'dir', mode: 0o755, mtime: T3 },
      { name: 'new-dir/file', data: 'n', mtime: T3 },
    ],
    'none',
  );
  return [l1, l2, l3];
}

describe('unpackImage', () => {
  let tmp: string;
  let store: CountingContentStore;
  beforeEach(async () => {
    tmp = tempDir('mybuild-unpack-');
    store = await newStore(join(tmp, 'store'));
  });
  afterEach(() => rmrf(tmp));

  it('produces the same rootfs as `umoci raw unpack`', async () => {
    const layers = parityLayers();
    await putLayers(store, layers);
    const layout = join(tmp, 'layout');
    writeOciLayout(layout, layers, 'test');
    const theirs = join(tmp, 'umoci');
    execFileSync('umoci', ['raw', 'unpack', '--image', `${layout}:test`, theirs], { stdio: 'pipe' });

    const ours = join(tmp, 'ours');
    await unpackImage(
      layers.map((l) => l.desc),
      store,
      ours,
      { diffIds: layers.map((l) => l.diffId) },
    );

    const a = comparableTree(ours, { mtimes: true });
    const b = comparableTree(theirs, { mtimes: true });
    expect(Object.keys(a.entries).sort()).toEqual(Object.keys(b.entries).sort());
    for (const p of Object.keys(b.entries)) expect({ p, ...a.entries[p] }).toEqual({ p, ...b.entries[p] });
    expect(a.hardlinks).toEqual(b.hardlinks);
    // and the tree is what the layers say, not merely what umoci says
    expect(a.hardlinks).toEqual([
      ['bin/sh', 'bin/sh-hard', 'bin/sh-hard2'],
      ['etc/passwd', 'etc/passwd-hard'],
    ]);
    expect(readFileSync(join(ours, 'usr/lib/libnew.so'), 'utf8')).toBe('new lib');
    expect(a.entries['usr/lib/added']).toBeUndefined();
    expect(a.entries['opt']).toBeUndefined();
    expect(a.entries['var/cache/new']).toBeDefined();
    expect(a.entries['var/cache/a']).toBeUndefined();
    expect(a.entries['srv/dir-to-file']?.type).toBe('file');
    expect(a.entries['srv/file-to-dir']?.type).toBe('dir');
    expect(a.entries['bin/arping']?.xattrs).toEqual({ 'security.capability': CAP.toString('hex') });
    expect(Object.keys(a.entries['bin/xattrs']?.xattrs ?? {})).toEqual(['trusted.t', 'user.bin', 'user.txt']);
    expect(a.entries['bin/xdir']?.xattrs).toEqual({ 'user.dir': Buffer.from('d').toString('hex') });
    expect(a.entries['home/user']?.mtime).toBe(T2 * 1000);
  });

  it('verifies each blob against its descriptor and its diffID', async () => {
    const layers = parityLayers().slice(0, 1);
    await putLayers(store, layers);
    const wrongBlob = { ...layers[0]!.desc, digest: sha256Of('other') };
    await expect(unpackImage([wrongBlob], store, join(tmp, 'a'))).rejects.toMatchObject({ code: 'NOT_FOUND' });
    const err = await unpackImage([layers[0]!.desc], store, join(tmp, 'b'), { diffIds: [sha256Of('x')] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MyBuildError);
    expect((err as MyBuildError).code).toBe('DIGEST_MISMATCH');
  });

  it('refuses a non-empty target directory', async () => {
    const target = join(tmp, 'full');
    mkdirSync(target);
    writeFileSync(join(target, 'x'), 'x');
    await expect(unpackImage([], store, target)).rejects.toMatchObject({ code: 'FAILED_PRECONDITION' });
  });
});
