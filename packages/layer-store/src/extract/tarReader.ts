import * as tarStream from 'tar-stream';
import { MyBuildError } from '@mybuild/oci';

/** PAX records of one entry (global records merged under the entry's own), values as raw bytes. */
export type PaxRecords = Map<string, Buffer>;

const EMPTY: PaxRecords = new Map();

/**
 * Parse a PAX extended header body: records `"%d %s=%s\n"` where the number is the record's
 * length in bytes. Values stay bytes: xattr values such as security.capability are binary,
 * and tar-stream's own decoder turns them into (lossy) UTF-8 strings.
 */
export function parsePaxRecords(buf: Buffer): PaxRecords {
  const out: PaxRecords = new Map();
  let off = 0;
  while (off < buf.length) {
    const sp = buf.indexOf(0x20, off);
    if (sp < 0 || sp - off > 20) break;
    const len = Number.parseInt(buf.toString('latin1', off, sp), 10);
    if (!Number.isSafeInteger(len) || len <= sp - off + 1 || off + len > buf.length) break;
    const rec = buf.subarray(sp + 1, off + len - 1); // without the trailing \n
    const eq = rec.indexOf(0x3d);
    if (eq > 0) out.set(rec.toString('utf8', 0, eq), Buffer.from(rec.subarray(eq + 1)));
    off += len;
  }
  return out;
}

interface ExtractInternals {
  _header: { type: string } | null;
  _decodeLongHeader(buf: Buffer): void;
}

export interface TarReader {
  extract: tarStream.Extract;
  /** The raw PAX records that apply to the entry tar-stream just emitted with `header`. */
  recordsFor(header: tarStream.Header): PaxRecords;
}

/**
 * A tar-stream extractor that also keeps the PAX records as bytes. tar-stream decodes
 * headers itself; we observe the same buffers it decodes (its `_decodeLongHeader` hook), so
 * both views always describe the same entry. tar-stream applies path, linkpath and size from
 * PAX; we read uid, gid, mtime, atime and xattrs from the raw records.
 */
export function createTarReader(): TarReader {
  const extract = tarStream.extract();
  const internals = extract as unknown as ExtractInternals;
  const decode = internals._decodeLongHeader;
  if (typeof decode !== 'function') {
    // A tar-stream upgrade changed its internals: fail loudly rather than lose xattrs silently.
    throw new MyBuildError('INTERNAL', 'tar-stream has no _decodeLongHeader hook; binary PAX records cannot be read');
  }
  let local: PaxRecords | undefined;
  let global: PaxRecords | undefined;
  internals._decodeLongHeader = function (this: ExtractInternals, buf: Buffer): void {
    const type = this._header?.type;
    if (type === 'pax-header') local = parsePaxRecords(buf);
    else if (type === 'pax-global-header') global = parsePaxRecords(buf);
    decode.call(this, buf);
  };
  return {
    extract,
    recordsFor(header) {
      // tar-stream sets header.pax exactly when a local PAX header preceded this entry.
      const own = header.pax ? local : undefined;
      local = undefined;
      if (!global) return own ?? EMPTY;
      if (!own) return global;
      return new Map([...global, ...own]);
    },
  };
}
