import { lstatSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { MyBuildError, errnoCode } from '@mybuild/oci';

/** securejoin's bound on symlinks followed while resolving one path. */
const MAX_SYMLINKS = 255;

/**
 * Resolve `path` (an absolute path as the container sees it) inside `root` the way runc
 * does before it mounts (securejoin): symlinks on the way are followed with `root` as `/`,
 * `..` never climbs above it, and components that do not exist are kept as written.
 * Returns the root-relative path, components joined by `/`, '' for the root itself.
 *
 * Not safe against a concurrent writer; the sandbox calls it before the container starts.
 */
export function rootPath(root: string, path: string): string {
  let resolved: string[] = [];
  let pending = path.split('/');
  let links = 0;
  while (pending.length > 0) {
    const part = pending.shift()!;
    if (part === '' || part === '.') continue;
    if (part === '..') {
      resolved.pop();
      continue;
    }
    const host = join(root, ...resolved, part);
    let isLink = false;
    try {
      isLink = lstatSync(host).isSymbolicLink();
    } catch (err) {
      // A missing component is kept as written, like a non-symlink.
      if (errnoCode(err) !== 'ENOENT' && errnoCode(err) !== 'ENOTDIR') throw err;
    }
    if (!isLink) {
      resolved.push(part);
      continue;
    }
    if (++links > MAX_SYMLINKS) {
      throw new MyBuildError('UNSAFE_PATH', `too many levels of symbolic links resolving ${path}`, { where: path });
    }
    const target = readlinkSync(host);
    if (target.startsWith('/')) resolved = [];
    pending = [...target.split('/'), ...pending];
  }
  return resolved.join('/');
}
