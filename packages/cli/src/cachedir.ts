import { lstatSync, mkdirSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';

/**
 * This user's cache directory for mybuild ($XDG_CACHE_HOME/mybuild, default ~/.cache/mybuild),
 * made if missing; undefined when there is no home, or when it is not a directory of this user
 * that nobody else may write (what is read from it steers the next command). The bundle's
 * loader (loader.cjs) checks its code cache directory below it the same way.
 */
export function userCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const base = env.XDG_CACHE_HOME || (env.HOME ? join(env.HOME, '.cache') : '');
  if (!isAbsolute(base)) return undefined;
  const dir = join(base, 'mybuild');
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = lstatSync(dir);
    const uid = process.getuid?.() ?? -1;
    if (!st.isDirectory() || st.uid !== uid || (st.mode & 0o022) !== 0) return undefined;
    return dir;
  } catch {
    return undefined;
  }
}
