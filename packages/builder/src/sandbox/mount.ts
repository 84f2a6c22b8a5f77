import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MyBuildError } from '@mybuild/oci';
import type { Mount } from '@mybuild/layer-store';

/** Run mount(8)/umount(8) (Node has no mount call); rejects with their one-line stderr. */
function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'utf8' }, (err, _stdout, stderr) => {
      if (!err) return resolve();
      const line = stderr.trim().split('\n').pop() ?? '';
      reject(new Error(line === '' ? err.message : line));
    });
  });
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
      if (m.type === 'overlay') await run('mount', ['-t', 'overlay', m.source, '-o', m.options.join(','), at]);
      else await run('mount', ['-o', m.options.join(','), m.source, at]);
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

/** Whether something is mounted exactly at `path` (in this mount namespace). */
export function isMountPoint(path: string): boolean {
  const escaped = path.replace(/[ \t\n\\]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`);
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === escaped);
}

/**
 * Unmount everything at and below `target`. A busy mount is retried for a moment, then
 * detached (lazy unmount) so that nothing stays mounted under the sandbox's directory.
 */
export async function unmount(target: string): Promise<void> {
  let last: unknown;
  for (let i = 0; i < 8; i++) {
    if (!isMountPoint(target)) return; // loops again for mounts stacked on one point
    try {
      await run('umount', ['-R', target]);
    } catch (err) {
      last = err;
      await new Promise((r) => setTimeout(r, 20 * (i + 1)));
    }
  }
  if (!isMountPoint(target)) return;
  try {
    await run('umount', ['-R', '-l', target]);
  } catch (err) {
    throw new MyBuildError('INTERNAL', `unmounting ${target} failed: ${(err as Error).message}`, { cause: last ?? err });
  }
}
