/**
 * `COPY --chown=user[:group]` and the owner of directories WORKDIR creates, resolved as
 * BuildKit's file op does (llb.WithUser + readUser): a number is an id (a lone uid is also the
 * gid), `root` is 0, a name is looked up in the destination's /etc/passwd (its primary gid
 * comes along) or /etc/group. A name that is not found — or a missing file — counts as 0, as in
 * BuildKit.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { MyBuildError, errnoCode } from '@mybuild/oci';
import { rootPath } from '../sandbox/rootPath.js';
import type { Owner } from './fscopy.js';

const MAX_FILE = 10 << 20;

export function resolveOwner(root: string, spec: string): Owner {
  const colon = spec.indexOf(':');
  const userPart = colon < 0 ? spec : spec.slice(0, colon);
  const groupPart = colon < 0 ? undefined : spec.slice(colon + 1);
  const out: Owner = { uid: 0, gid: 0 };
  const uid = parseId(userPart);
  if (uid !== undefined) {
    out.uid = uid;
    out.gid = uid;
  } else {
    const entry = lookup(root, '/etc/passwd', userPart, 4);
    if (entry) {
      out.uid = Number(entry[2]);
      out.gid = Number(entry[3]);
    }
  }
  if (groupPart !== undefined) {
    const gid = parseId(groupPart);
    if (gid !== undefined) out.gid = gid;
    else {
      const entry = lookup(root, '/etc/group', groupPart, 3);
      if (entry) out.gid = Number(entry[2]);
    }
  }
  return out;
}

/** BuildKit's parseUID: `root` or a 32-bit decimal. */
function parseId(s: string): number | undefined {
  if (s === 'root') return 0;
  if (!/^[+-]?[0-9]+$/.test(s)) return undefined;
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < -(2 ** 31) || n >= 2 ** 31) return undefined;
  if (n < 0) throw new MyBuildError('INVALID_ARGUMENT', `invalid id ${s} in --chown`);
  return n;
}

/** The fields of the first line of `file` (in `root`) whose first field is `name` and whose id fields are numbers. */
function lookup(root: string, file: string, name: string, fields: number): string[] | undefined {
  const text = readInRoot(root, file);
  if (text === undefined) return undefined;
  for (const line of text.split('\n')) {
    const f = line.trim().split(':');
    if (f.length < fields || f[0] !== name) continue;
    if (!/^[0-9]+$/.test(f[2]!) || (fields === 4 && !/^[0-9]+$/.test(f[3]!))) continue;
    return f;
  }
  return undefined;
}

function readInRoot(root: string, path: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(join(root, rootPath(root, path)), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT' || code === 'ENOTDIR' || code === 'ELOOP') return undefined;
    throw err;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new MyBuildError('INVALID_ARGUMENT', `${path} is not a regular file`, { where: path });
    if (st.size > MAX_FILE) throw new MyBuildError('SIZE_EXCEEDED', `${path} is larger than ${MAX_FILE} bytes`, { where: path });
    const buf = Buffer.alloc(st.size);
    let off = 0;
    while (off < buf.length) {
      const n = readSync(fd, buf, off, buf.length - off, off);
      if (n === 0) break;
      off += n;
    }
    return buf.subarray(0, off).toString('utf8');
  } finally {
    closeSync(fd);
  }
}
