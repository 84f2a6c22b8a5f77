import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { sys } from '@mybuild/layer-store';

export interface TreeEntry {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  link?: string;
  rdev?: string;
  xattrs?: Record<string, string>;
  /** paths sharing this inode (hardlinks), sorted; only when more than one */
  hardlinks?: string[];
}

/** Everything `umoci raw unpack` promises about a tree, as one comparable object. */
export function describeTree(root: string): Record<string, TreeEntry> {
  const out: Record<string, TreeEntry> = {};
  const inodes = new Map<number, string[]>();
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(root, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(root, r);
      const st = lstatSync(p);
      const e: TreeEntry = {
        type: st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : st.isFIFO() ? 'fifo' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : 'other',
        mode: (st.mode & 0o7777).toString(8),
        uid: st.uid,
        gid: st.gid,
      };
      if (e.type === 'symlink') {
        e.link = readlinkSync(p);
        delete (e as { mode?: string }).mode;
      }
      if (e.type === 'file') {
        e.size = st.size;
        e.sha256 = createHash('sha256').update(readFileSync(p)).digest('hex');
        if (st.nlink > 1) inodes.set(st.ino, [...(inodes.get(st.ino) ?? []), r]);
      }
      if (e.type === 'char' || e.type === 'block') e.rdev = sys().devnums(st.rdev).join(',');
      const names = sys().llistxattr(p).sort();
      if (names.length) e.xattrs = Object.fromEntries(names.map((n) => [n, sys().lgetxattr(p, n)?.toString('base64') ?? '']));
      out[r] = e;
      if (e.type === 'dir') walk(r);
    }
  };
  walk('');
  for (const paths of inodes.values()) {
    if (paths.length > 1) for (const p of paths) out[p]!.hardlinks = [...paths].sort();
  }
  return out;
}
