import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MyBuildError } from '@mybuild/oci';
import { type Mount, sys } from '@mybuild/layer-store';

// <sys/mount.h>
const MS_RDONLY = 0x1;
const MS_REMOUNT = 0x20;
const MS_BIND = 0x1000;
const MS_REC = 0x4000;
const MNT_DETACH = 0x2;

/**
 * Mount one of the snapshotter's mounts with mount(2) (through the addon: no mount(8) to fork and
 * exec per step), as mount(8) would for the same `-o` options: an overlay's options are its
 * data ('ro' a flag); a bind mount is MS_BIND (MS_REC for 'rbind'), then remounted read-only for
 * 'ro' (the kernel ignores MS_RDONLY on the bind itself).
 */
async function mountOne(m: Mount, at: string): Promise<void> {
  if (m.type === 'overlay') {
    const flags = m.options.includes('ro') ? MS_RDONLY : 0;
    await sys().mount(m.source, at, 'overlay', flags, m.options.filter((o) => o !== 'ro' && o !== 'rw').join(','));
    return;
  }
  const unknown = m.options.find((o) => o !== 'bind' && o !== 'rbind' && o !== 'ro' && o !== 'rw');
  if (unknown !== undefined) throw new Error(`bind mount option ${unknown} is not supported`);
  await sys().mount(m.source, at, '', MS_BIND | (m.options.includes('rbind') ? MS_REC : 0), '');
  if (!m.options.includes('ro')) return;
  try {
    await sys().mount('', at, '', MS_REMOUNT | MS_BIND | MS_RDONLY, '');
  } catch (err) {
    await sys().umount(at, MNT_DETACH).catch(() => {});
    throw err;
  }
}

/**
 * Mount the snapshotter's mounts (overlay or bind, as data) on `target`, in order, as
 * containerd's mount.All does. Whatever was mounted before a failure is unmounted again.
 */
export async function mountAll(mounts: Mount[], target: string): Promise<void> {
  const done: string[] = [];
  try {
    for (const m of mounts) {
      const at = m.target === undefined ? target : join(target, m.target);
      await mountOne(m, at);
      done.push(at);
    }
  } catch (err) {
    for (const at of done.reverse()) await unmount(at).catch(() => {});
    throw new MyBuildError('INTERNAL', `mounting the rootfs failed: ${(err as Error).message}`, {
      hint: 'the sandbox needs root (or CAP_SYS_ADMIN) and overlayfs',
      cause: err,
    });
  }
}

interface MountEntry {
  id: number;
  parent: number;
  point: string;
}

/** The mounts of this mount namespace (/proc/self/mountinfo: id, parent id, mount point unescaped). */
function mountTable(): MountEntry[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const f = l.split(' ');
      return { id: Number(f[0]), parent: Number(f[1]), point: (f[4] ?? '').replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))) };
    });
}

/** Whether something is mounted exactly at `path` (in this mount namespace). */
export function isMountPoint(path: string): boolean {
  return mountTable().some((m) => m.point === path);
}

/**
 * The mounts at and below `target`, children before their parents (by the mount tree, not the
 * table's order: a mount moved below the target is listed after it), so each unmount finds
 * nothing mounted on it. A mount stacked on another at the same point is its child.
 */
function mountsFrom(target: string): string[] {
  const below = target.endsWith('/') ? target : `${target}/`;
  const picked = mountTable().filter((m) => m.point === target || m.point.startsWith(below));
  const byId = new Map(picked.map((m) => [m.id, m]));
  const depth = (m: MountEntry): number => {
    let d = 0;
    for (let p = byId.get(m.parent); p !== undefined && d < picked.length; p = byId.get(p.parent)) d++;
    return d;
  };
  return picked
    .map((m) => ({ m, d: depth(m) }))
    .sort((a, b) => b.d - a.d || b.m.id - a.m.id)
    .map(({ m }) => m.point);
}

/** umount2, where a mount gone meanwhile (EINVAL: not a mount point, ENOENT) is no failure. */
async function umountOne(point: string, flags: number): Promise<void> {
  await sys()
    .umount(point, flags)
    .catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EINVAL' && err.code !== 'ENOENT') throw err;
    });
}

/**
 * Unmount everything at and below `target` (as `umount -R`). A busy mount is retried for a
 * moment, then detached (lazy unmount) so that nothing stays mounted under the sandbox's
 * directory.
 */
export async function unmount(target: string): Promise<void> {
  let last: unknown;
  for (let i = 0; i < 8; i++) {
    const points = mountsFrom(target);
    if (!points.includes(target)) return;
    try {
      for (const p of points) await umountOne(p, 0);
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 20 * (i + 1)));
    }
  }
  if (!isMountPoint(target)) return;
  try {
    for (const p of mountsFrom(target)) await umountOne(p, MNT_DETACH);
  } catch (err) {
    throw new MyBuildError('INTERNAL', `unmounting ${target} failed: ${(err as Error).message}`, { cause: last ?? err });
  }
}
