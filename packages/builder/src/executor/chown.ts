/**
 * `COPY --chown=user[:group]` and the owner of directories WORKDIR creates, resolved as
 * BuildKit's file op does (llb.WithUser + readUser): a number is an id (a lone uid is also the
 * gid), `root` is 0, a name is looked up in the destination's /etc/passwd (its primary gid
 * comes along) or /etc/group. A name that is not found — or a missing file — counts as 0, as in
 * BuildKit.
 */
import { MyBuildError } from '@mybuild/oci';
import { readAccountFile } from '../sandbox/user.js';
import type { Owner } from './fscopy.js';

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
  const text = readAccountFile(root, file);
  if (text === undefined) return undefined;
  for (const line of text.split('\n')) {
    const f = line.trim().split(':');
    if (f.length < fields || f[0] !== name) continue;
    if (!/^[0-9]+$/.test(f[2]!) || (fields === 4 && !/^[0-9]+$/.test(f[3]!))) continue;
    return f;
  }
  return undefined;
}
