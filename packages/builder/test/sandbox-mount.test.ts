/**
 * The rootfs mounts of RUN and COPY steps: mount(2)/umount2(2) through the addon, in the ways
 * mount(8) and `umount -R` did them before. Real overlay and bind mounts; needs root.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MyBuildError } from '@mybuild/oci';
import { sys } from '@mybuild/layer-store';
import { isMountPoint, mountAll, unmount } from '../src/sandbox/mount.js';

const isRoot = process.getuid?.() === 0;

/** Mount points at or under `dir`, straight from the kernel's table. */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => (l.split(' ')[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))))
    .filter((mp) => mp === dir || mp.startsWith(`${dir}/`));
}

function writeFails(path: string): string | undefined {
  try {
    writeFileSync(path, 'x');
    return undefined;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code;
  }
}

describe.skipIf(!isRoot)('rootfs mounts through mount(2)', () => {
  let dir: string;
  beforeEach(() => {
    // a space in the path: mountinfo escapes it (\040), and unmount must still find the mount
    dir = mkdtempSync(join(tmpdir(), 'mybuild mount-'));
    for (const d of ['lower1', 'lower2', 'upper', 'work', 'root', 'src', 'src/sub']) mkdirSync(join(dir, d));
    writeFileSync(join(dir, 'lower1/a'), 'from lower1');
    writeFileSync(join(dir, 'lower2/a'), 'from lower2');
    writeFileSync(join(dir, 'lower2/b'), 'only lower2');
    writeFileSync(join(dir, 'src/file'), 'bound');
  });
  afterEach(() => {
    for (const mp of mountsUnder(dir).reverse()) execFileSync('umount', ['-l', mp]);
    rmSync(dir, { recursive: true, force: true });
  });

  it('mounts an overlay with its options as data (first lowerdir on top) and a read-only bind below it', async () => {
    const root = join(dir, 'root');
    await mountAll(
      [
        {
          type: 'overlay',
          source: 'overlay',
          options: ['index=off', 'redirect_dir=off', 'metacopy=off', `lowerdir=${dir}/lower1:${dir}/lower2`, `upperdir=${dir}/upper`, `workdir=${dir}/work`],
        },
      ],
      root,
    );
    expect(isMountPoint(root)).toBe(true);
    expect(readFileSync(join(root, 'a'), 'utf8')).toBe('from lower1');
    expect(readFileSync(join(root, 'b'), 'utf8')).toBe('only lower2');
    writeFileSync(join(root, 'new'), 'written');
    expect(readFileSync(join(dir, 'upper/new'), 'utf8')).toBe('written');
    const opts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === root.replace(/ /g, '\\040'));
    expect(opts).toMatch(/ - overlay overlay rw,lowerdir=.*\/lower1:.*\/lower2,upperdir=.*\/upper,workdir=/);

    mkdirSync(join(root, 'mnt'));
    await mountAll([{ type: 'bind', source: join(dir, 'src'), target: 'mnt', options: ['rbind', 'ro'] }], root);
    expect(readFileSync(join(root, 'mnt/file'), 'utf8')).toBe('bound');
    expect(writeFails(join(root, 'mnt/file'))).toBe('EROFS');
    expect(writeFails(join(dir, 'src/other'))).toBeUndefined(); // the source itself stays writable

    // a mount below the bind, and a second mount stacked on the root: all go with the root
    await sys().mount('tmpfs', join(root, 'mnt/sub'), 'tmpfs', 0, 'size=1m');
    await mountAll([{ type: 'bind', source: join(dir, 'lower2'), options: ['rbind', 'ro'] }], root);
    expect(readFileSync(join(root, 'a'), 'utf8')).toBe('from lower2');
    expect(mountsUnder(root)).toHaveLength(4);

    await unmount(root);
    expect(mountsUnder(dir)).toEqual([]);
    expect(isMountPoint(root)).toBe(false);
    await unmount(root); // nothing mounted: nothing to do
  });

  it('a read-write rbind stays writable; a failed mount undoes the mounts before it and says what failed', async () => {
    const root = join(dir, 'root');
    await mountAll([{ type: 'bind', source: join(dir, 'src'), options: ['rbind', 'rw'] }], root);
    writeFileSync(join(root, 'rw'), 'yes');
    expect(readFileSync(join(dir, 'src/rw'), 'utf8')).toBe('yes');
    await unmount(root);

    const err = await mountAll(
      [
        { type: 'bind', source: join(dir, 'src'), options: ['rbind', 'ro'] },
        { type: 'overlay', source: 'overlay', target: 'sub', options: [`lowerdir=${dir}/does-not-exist`, `upperdir=${dir}/upper`, `workdir=${dir}/work`] },
      ],
      root,
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MyBuildError);
    expect((err as MyBuildError).message).toMatch(/^mounting the rootfs failed: ENOENT: .*mount '.*\/root\/sub'/);
    expect(mountsUnder(dir)).toEqual([]); // the bind mounted first was taken down again

    const bad = await mountAll([{ type: 'bind', source: join(dir, 'src'), options: ['rbind', 'nosuid'] }], root).catch((e: unknown) => e);
    expect((bad as Error).message).toMatch(/bind mount option nosuid is not supported/);
    expect(mountsUnder(dir)).toEqual([]);
  });

  it('unmounts a mount moved below the target before the target (mount tree order, not table order)', async () => {
    const base = join(dir, 'mv');
    mkdirSync(base);
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', base]);
    execFileSync('mount', ['--make-rprivate', base]); // a mount under a shared one cannot move
    for (const d of ['elsewhere', 'root']) mkdirSync(join(base, d));
    mkdirSync(join(dir, 'src', 'moved'));
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', join(base, 'elsewhere')]); // mounted first: the lower id
    const root = join(base, 'root');
    await mountAll([{ type: 'bind', source: join(dir, 'src'), options: ['rbind', 'rw'] }], root);
    execFileSync('mount', ['--move', join(base, 'elsewhere'), join(root, 'moved')]);
    expect(mountsUnder(root)).toHaveLength(2);
    const started = Date.now();
    await unmount(root);
    expect(mountsUnder(root)).toEqual([]);
    expect(Date.now() - started).toBeLessThan(500); // no EBUSY retries
  });

  it('the addon checks its arguments before any system call', async () => {
    const s = sys();
    expect(() => s.mount('overlay', '', 'overlay', 0, '')).toThrow(TypeError);
    expect(() => s.mount('overlay', join(dir, 'root'), 'overlay', -1, '')).toThrow(TypeError);
    expect(() => s.mount('overlay', join(dir, 'root'), 'overlay', 0, 'x'.repeat(4096))).toThrow(/one page/);
    expect(() => s.umount('a\0b', 0)).toThrow(TypeError);
    await expect(s.umount(join(dir, 'root'), 0)).rejects.toMatchObject({ code: 'EINVAL', syscall: 'umount2' });
  });
});
