import { MyBuildError } from '@mybuild/oci';

/** OCI whiteout prefix: `.wh.name` deletes `name` of the lower layers. */
export const WHITEOUT_PREFIX = '.wh.';
/** OCI opaque marker: the directory holding it hides every lower child. */
export const WHITEOUT_OPAQUE = '.wh..wh..opq';
/** AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): never part of the image's content. */
export const WHITEOUT_META_PREFIX = '.wh..wh.';

/** Linux limits: a path given to a system call, and one name inside a directory. */
export const PATH_MAX = 4096;
export const NAME_MAX = 255;

/** The refusal every unsafe entry gets: one line naming the entry. */
export function unsafeEntry(name: string, why: string, what: string): MyBuildError {
  const shown = name.length > 200 ? `${name.slice(0, 200)}…` : name;
  return new MyBuildError('UNSAFE_PATH', `refusing tar entry ${JSON.stringify(shown)}: ${why}`, {
    where: what,
    hint: 'the layer tar is malformed or hostile; nothing was written outside the target directory',
  });
}

/**
 * Normalise a tar entry name like containerd does, lexically: drop empty and `.` components,
 * strip a leading `/` (absolute names are relative to the root), resolve `..` — and refuse a name
 * whose `..` would climb above the root instead of clamping it. Returns the components; `[]` is
 * the root itself.
 */
export function cleanEntryName(name: string, what: string): string[] {
  if (name.includes('\0')) throw unsafeEntry(name, 'the name contains a NUL byte', what);
  const out: string[] = [];
  for (const c of name.split('/')) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      if (out.length === 0) throw unsafeEntry(name, 'the name climbs out of the root with ".."', what);
      out.pop();
      continue;
    }
    if (Buffer.byteLength(c) > NAME_MAX) throw unsafeEntry(name, `a path component is longer than ${NAME_MAX} bytes`, what);
    out.push(c);
  }
  return out;
}
