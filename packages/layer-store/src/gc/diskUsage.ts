import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode } from '@mybuild/oci';

export interface TreeUsage {
  /** bytes the files take on disk (st_blocks × 512), a hardlinked inode counted once */
  bytes: number;
  /** files, directories and other entries (the top directory excluded), hardlinks once */
  entries: number;
}

/**
 * On-disk size of a directory tree by an lstat walk: symlinks are not followed, an inode
 * with several links is counted once across every walk that shares `seen`. Entries that
 * vanish during the walk are skipped. A missing `dir` is empty.
 */
export async function treeUsage(dir: string, seen: Set<string> = new Set()): Promise<TreeUsage> {
  const usage: TreeUsage = { bytes: 0, entries: 0 };
  const stack = [dir];
  for (let d = stack.pop(); d !== undefined; d = stack.pop()) {
    let handle;
    try {
      handle = await opendir(d, { bufferSize: 256 });
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') continue;
      throw err;
    }
    const names: string[] = [];
    for await (const entry of handle) names.push(entry.name);
    // lstat in batches: fast on large trees without opening thousands of requests at once
    for (let i = 0; i < names.length; i += 64) {
      const batch = names.slice(i, i + 64).map((n) => join(d, n));
      const stats = await Promise.all(batch.map((p) => lstat(p, { bigint: true }).catch((err: unknown) => {
        if (errnoCode(err) === 'ENOENT') return undefined;
        throw err;
      })));
      stats.forEach((st, j) => {
        if (!st) return;
        if (st.isDirectory()) stack.push(batch[j]!);
        else if (st.nlink > 1n) {
          const key = `${st.dev}:${st.ino}`;
          if (seen.has(key)) return;
          seen.add(key);
        }
        usage.entries++;
        usage.bytes += Number(st.blocks) * 512;
      });
    }
  }
  return usage;
}
