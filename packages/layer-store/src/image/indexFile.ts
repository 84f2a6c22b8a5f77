import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  type Descriptor,
  type ImageIndex,
  MediaType,
  MyBuildError,
  REF_NAME_ANNOTATION,
  errnoCode,
  familiarReference,
  parseReference,
  withDefaultTag,
} from '@mybuild/oci';
import type { StorePaths } from '../api.js';
import { withLock } from '../lock.js';
import { sys } from '../native.js';
import { writeFileAtomic } from '../paths.js';
import { parseImageIndex } from './parse.js';

/** Name of the lock (lock.ts) every index.json mutation holds, exclusively. */
export const INDEX_LOCK = 'index';

export function indexPath(paths: StorePaths): string {
  return join(paths.root, 'index.json');
}

/**
 * Read and check the store's index.json. Readers take no lock: writers replace the file
 * by rename, so a reader sees the old or the new version, never a mix.
 */
export async function readIndexFile(paths: StorePaths): Promise<ImageIndex> {
  const path = indexPath(paths);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') {
      throw new MyBuildError('FAILED_PRECONDITION', 'store has no index.json', { where: path, hint: 'open the store with openStore() to create its layout' });
    }
    throw err;
  }
  return parseImageIndex(text, path);
}

/**
 * Read-modify-write index.json under the exclusive `index` lock; `fn` changes the index in
 * place (unknown fields are kept) and returns a value. The file is replaced atomically and
 * only when `fn` returns without throwing. `idempotent`: `fn` may already be in effect (see
 * below); it is then called twice, once on an unlocked read.
 */
export async function mutateIndex<T>(paths: StorePaths, fn: (index: ImageIndex) => T | Promise<T>, opts: { idempotent?: boolean } = {}): Promise<T> {
  const apply = async (): Promise<{ result: T; after: string | undefined }> => {
    const index = await readIndexFile(paths);
    const before = JSON.stringify(index);
    index.mediaType ??= MediaType.OciIndex;
    const result = await fn(index);
    const after = JSON.stringify(index);
    return { result, after: after === before ? undefined : after };
  };
  if (opts.idempotent) {
    // A change that may already be made (re-tagging an image under the name it has, as every
    // cached rebuild does) is tried first on the index as it is, without the lock: when it
    // changes nothing, nothing is written or locked. Readers see whole files (rename), so this
    // is the no-op that the locked path would have made at the moment of the read. Another
    // writer may have renamed that file in but not yet fsynced the directory: it is fsynced
    // here (nothing to write back, most times), so that what this found stays after a crash.
    const { result, after } = await apply();
    if (after === undefined) {
      sys().fsyncdir(paths.root);
      return result;
    }
  }
  return withLock(paths.locks, INDEX_LOCK, async () => {
    const { result, after } = await apply();
    // Re-tagging an image under the name it already has (a cached rebuild) writes nothing.
    if (after !== undefined) await writeFileAtomic(indexPath(paths), after);
    return result;
  });
}

/**
 * The form a tag is stored in: docker's familiar reference with the default tag
 * (`alpine` → `alpine:latest`, `docker.io/team/app:1` → `team/app:1`,
 * `localhost:5000/app` → `localhost:5000/app:latest`). A digest is refused.
 */
export function normalizeTagName(name: string): string {
  const ref = withDefaultTag(parseReference(name));
  if (ref.digest !== undefined) {
    throw new MyBuildError('INVALID_ARGUMENT', `cannot use ${JSON.stringify(name.slice(0, 200))} as a tag: it names a digest`, {
      hint: 'a tag looks like repository[:tag]',
    });
  }
  return familiarReference(ref);
}

/** Normal form of a name found in index.json (other tools may write any string), or the raw string. */
export function storedName(raw: string): string {
  try {
    return normalizeTagName(raw);
  } catch {
    return raw;
  }
}

/** The tag of an index.json entry, or undefined for an untagged one. */
export function entryName(d: Descriptor): string | undefined {
  const n = d.annotations?.[REF_NAME_ANNOTATION];
  return n === undefined || n === '' ? undefined : n;
}
