import { lstatSync, mkdirSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';

/**
 * Whether nobody but this user (and root) can change what `dir` holds: it and every directory
 * above it belong to this user or root and are writable by nobody else, except sticky ones
 * owned by root (/tmp), where others cannot rename or remove what is not theirs. The bundle's
 * loader (loader.cjs) uses this file too (build.mjs makes dist/cachedir.cjs of it).
 */
export function trustedDir(dir: string, uid = process.getuid?.() ?? -1): boolean {
  for (let d = dir; ; d = dirname(d)) {
    const st = lstatSync(d);
    if (!st.isDirectory() || (st.uid !== uid && st.uid !== 0)) return false;
    if ((st.mode & 0o022) !== 0 && !(d !== dir && st.uid === 0 && (st.mode & 0o1000) !== 0)) return false;
    if (d === dirname(d)) return true;
  }
}

/**
 * This user's cache directory for mybuild ($XDG_CACHE_HOME/mybuild, default ~/.cache/mybuild),
 * made if missing; undefined when there is no home, or when it is not a directory of this user
 * that nobody else may change ({@link trustedDir}): what is read from it steers the next command.
 */
export function userCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const base = env.XDG_CACHE_HOME || (env.HOME ? join(env.HOME, '.cache') : '');
  if (!isAbsolute(base)) return undefined;
  const dir = join(base, 'mybuild');
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const uid = process.getuid?.() ?? -1;
    if (lstatSync(dir).uid !== uid) return undefined;
    return trustedDir(dir, uid) ? dir : undefined;
  } catch {
    return undefined;
  }
}
