/** `RUN --mount=...` values: CSV fields parsed and validated like BuildKit's parseMount. */
import { suggest } from './errors.js';

export type MountType = 'bind' | 'cache' | 'tmpfs' | 'secret' | 'ssh';
export type CacheSharing = 'shared' | 'private' | 'locked';

export interface MountSpec {
  type: MountType;
  /** Stage name or index, or image reference (bind and cache mounts); "" when not given. */
  from: string;
  source: string;
  /** As written (possibly relative to the working directory); "" when not given. */
  target: string;
  readOnly: boolean;
  /** tmpfs size in bytes; 0 = no limit. */
  sizeLimit: number;
  /** `id=`: cache id, or the secret/ssh id. */
  id: string;
  sharing: CacheSharing | '';
  required: boolean;
  /** Secret exposed as this environment variable instead of a file. */
  env?: string;
  mode?: number;
  uid?: number;
  gid?: number;
}

const MOUNT_TYPES: MountType[] = ['bind', 'cache', 'tmpfs', 'secret', 'ssh'];
const SHARING: CacheSharing[] = ['shared', 'private', 'locked'];
const ALL_KEYS = ['type', 'from', 'source', 'target', 'readonly', 'id', 'sharing', 'required', 'size', 'mode', 'uid', 'gid', 'src', 'dst', 'destination', 'ro', 'rw', 'readwrite', 'env'];

/** A mount value problem; the caller adds the line. */
export class MountError extends Error {
  constructor(
    message: string,
    readonly hint?: string,
  ) {
    super(message);
  }
}

/** encoding/csv fields of one line (no lazy quotes, no trimming). */
export function csvFields(line: string): string[] {
  const fields: string[] = [];
  if (line === '') return fields;
  let i = 0;
  for (;;) {
    if (line[i] === '"') {
      let v = '';
      i++;
      for (;;) {
        const q = line.indexOf('"', i);
        if (q < 0) throw new MountError('failed to parse csv mounts: extraneous or missing " in quoted-field');
        v += line.slice(i, q);
        i = q + 1;
        if (line[i] === '"') {
          v += '"';
          i++;
          continue;
        }
        if (i === line.length || line[i] === ',') break;
        throw new MountError('failed to parse csv mounts: extraneous or missing " in quoted-field');
      }
      fields.push(v);
    } else {
      const c = line.indexOf(',', i);
      const v = c < 0 ? line.slice(i) : line.slice(i, c);
      if (v.includes('"')) throw new MountError('failed to parse csv mounts: bare " in non-quoted-field');
      fields.push(v);
      i = c < 0 ? line.length : c;
    }
    if (i >= line.length) return fields;
    i++; // ','
    if (i === line.length) {
      fields.push('');
      return fields;
    }
  }
}

/** strconv.ParseBool */
export function parseGoBool(v: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(v)) return false;
  return undefined;
}

function parseUint32(v: string, base: 8 | 10): number | undefined {
  const re = base === 8 ? /^[0-7]+$/ : /^[0-9]+$/;
  if (!re.test(v)) return undefined;
  const n = Number.parseInt(v, base);
  return n <= 0xffffffff ? n : undefined;
}

/** go-units RAMInBytes: "64m", "1.5GiB", "1024" (binary multipliers). */
export function ramInBytes(size: string): number {
  let sep = -1;
  for (let i = size.length - 1; i >= 0; i--) {
    if ('01234567890. '.includes(size[i]!)) {
      sep = i;
      break;
    }
  }
  if (sep === -1) throw new Error(`invalid size: '${size}'`);
  const num = size[sep] !== ' ' ? size.slice(0, sep + 1) : size.slice(0, sep);
  let sfx = size.slice(sep + 1);
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(num)) throw new Error(`strconv.ParseFloat: parsing ${JSON.stringify(num)}: invalid syntax`);
  let value = Number.parseFloat(num);
  if (value < 0) throw new Error(`invalid size: '${size}'`);
  if (sfx.length === 0) return Math.trunc(value);
  if (sfx.length > 3) throw new Error(`invalid suffix: '${sfx}'`);
  sfx = sfx.toLowerCase();
  if (sfx[0] === 'b') {
    if (sfx.length > 1) throw new Error(`invalid suffix: '${sfx}'`);
    return Math.trunc(value);
  }
  const mul = { k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40, p: 2 ** 50 }[sfx[0]!];
  if (mul === undefined) throw new Error(`invalid suffix: '${sfx}'`);
  value *= mul;
  if ((sfx.length === 2 && sfx[1] !== 'b') || (sfx.length === 3 && sfx.slice(1) !== 'ib')) throw new Error(`invalid suffix: '${sfx}'`);
  return Math.trunc(value);
}

/**
 * Parse-time check (before variables are known): valid CSV, and `from` without variables.
 */
export function precheckMount(val: string): void {
  for (const field of csvFields(val)) {
    const eq = field.indexOf('=');
    if (eq < 0) continue;
    if (field.slice(0, eq).toLowerCase() === 'from') {
      const value = field.slice(eq + 1);
      const idx = value.indexOf('$');
      if (idx !== -1 && idx !== value.length - 1) {
        throw new MountError("'from' doesn't support variable expansion, define alias stage instead");
      }
    }
  }
}

/** Full parse, values expanded with `expand`. Throws MountError. */
export function parseMount(val: string, expand: (word: string) => string): MountSpec {
  const m: MountSpec = { type: 'bind', from: '', source: '', target: '', readOnly: false, sizeLimit: 0, id: '', sharing: '', required: false };
  let roAuto = true;
  for (const field of csvFields(val)) {
    const eq = field.indexOf('=');
    const key = (eq < 0 ? field : field.slice(0, eq)).toLowerCase();
    if (eq < 0) {
      switch (key) {
        case 'readonly':
        case 'ro':
          m.readOnly = true;
          roAuto = false;
          continue;
        case 'readwrite':
        case 'rw':
          m.readOnly = false;
          roAuto = false;
          continue;
        case 'required':
          if (m.type === 'secret' || m.type === 'ssh') {
            m.required = true;
            continue;
          }
          throw new MountError(`unexpected key '${key}' for mount type '${m.type}'`);
        default:
          throw new MountError(`invalid field '${field}' must be a key=value pair`);
      }
    }
    const value = expand(field.slice(eq + 1));
    const bool = (): boolean => {
      const b = parseGoBool(value);
      if (b === undefined) throw new MountError(`invalid value for ${key}: ${value}`);
      return b;
    };
    switch (key) {
      case 'type': {
        const t = value.toLowerCase() as MountType;
        if (!MOUNT_TYPES.includes(t)) {
          const s = suggest(value, MOUNT_TYPES, true);
          throw new MountError(`unsupported mount type ${JSON.stringify(value)}`, s ? `did you mean ${s}?` : `one of ${MOUNT_TYPES.join(', ')}`);
        }
        m.type = t;
        break;
      }
      case 'from':
        m.from = value;
        break;
      case 'source':
      case 'src':
        m.source = value;
        break;
      case 'target':
      case 'dst':
      case 'destination':
        m.target = value;
        break;
      case 'readonly':
      case 'ro':
        m.readOnly = bool();
        roAuto = false;
        break;
      case 'readwrite':
      case 'rw':
        m.readOnly = !bool();
        roAuto = false;
        break;
      case 'required':
        if (m.type !== 'secret' && m.type !== 'ssh') throw new MountError(`unexpected key '${key}' for mount type '${m.type}'`);
        m.required = bool();
        break;
      case 'size':
        if (m.type !== 'tmpfs') throw new MountError(`unexpected key '${key}' for mount type '${m.type}'`);
        try {
          m.sizeLimit = ramInBytes(value);
        } catch {
          throw new MountError(`invalid value for ${key}: ${value}`);
        }
        break;
      case 'id':
        m.id = value;
        break;
      case 'sharing': {
        const s = value.toLowerCase() as CacheSharing;
        if (!SHARING.includes(s)) {
          const sug = suggest(value, SHARING, true);
          throw new MountError(`unsupported sharing value ${JSON.stringify(value)}`, sug ? `did you mean ${sug}?` : `one of ${SHARING.join(', ')}`);
        }
        m.sharing = s;
        break;
      }
      case 'mode': {
        const n = parseUint32(value, 8);
        if (n === undefined) throw new MountError(`invalid value ${value} for mode`);
        m.mode = n;
        break;
      }
      case 'uid': {
        const n = parseUint32(value, 10);
        if (n === undefined) throw new MountError(`invalid value ${value} for uid`);
        m.uid = n;
        break;
      }
      case 'gid': {
        const n = parseUint32(value, 10);
        if (n === undefined) throw new MountError(`invalid value ${value} for gid`);
        m.gid = n;
        break;
      }
      case 'env':
        m.env = value;
        break;
      default: {
        const s = suggest(key, ALL_KEYS, true);
        throw new MountError(`unexpected key '${key}' in '${field}'`, s ? `did you mean ${s}?` : undefined);
      }
    }
  }
  const fileInfoAllowed = m.type === 'secret' || m.type === 'ssh' || m.type === 'cache';
  if (!fileInfoAllowed) {
    if (m.mode !== undefined) throw new MountError(`mode not allowed for "${m.type}" type mounts`);
    if (m.uid !== undefined) throw new MountError(`uid not allowed for "${m.type}" type mounts`);
    if (m.gid !== undefined) throw new MountError(`gid not allowed for "${m.type}" type mounts`);
  }
  if (roAuto) m.readOnly = !(m.type === 'cache' || m.type === 'tmpfs');
  if (m.type === 'secret') {
    if (m.from !== '') throw new MountError('secret mount should not have a from');
    if (m.sharing !== '') throw new MountError('secret mount should not define sharing');
    if (m.source === '' && m.target === '' && m.id === '') throw new MountError('invalid secret mount. one of source, target required');
    if (m.source !== '' && m.id !== '') throw new MountError("both source and id can't be set");
  }
  if (m.sharing !== '' && m.type !== 'cache') throw new MountError(`invalid cache sharing set for ${m.type} mount`);
  return m;
}
