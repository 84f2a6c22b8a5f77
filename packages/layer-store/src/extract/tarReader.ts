import type * as tarStream from 'tar-stream';
import { tarStream as loadTarStream } from '../lazy.js';
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
  _header: { type: string | null; size: number | null } | null;
  _decodeLongHeader(buf: Buffer): void;
  _consumeHeader(): boolean;
  _applyLongHeaders(): void;
}

/** Types that have no data records (POSIX; Go's archive/tar ignores their size field). */
const HEADER_ONLY = new Set(['link', 'symlink', 'character-device', 'block-device', 'fifo', 'directory']);

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
 *
 * The archive is framed exactly as Go's archive/tar frames it (docker, containerd, umoci and
 * most image scanners read layers with it), so that no entry is seen by one and not the other:
 * - PAX global headers are ignored, as docker and containerd do (tar-stream would merge their
 *   path, linkpath and size into later entries);
 * - links, symlinks, devices and FIFOs have no data records, whatever their size field says
 *   (tar-stream would swallow the next headers as their body);
 * - an entry after a zero block is refused: Go stops at the end-of-archive marker (or fails on
 *   a lone zero block), where tar-stream skips zero blocks and reads on.
 */
export async function createTarReader(what = 'layer'): Promise<TarReader> {
  const extract = (await loadTarStream()).extract();
  const internals = extract as unknown as ExtractInternals;
  const decode = internals._decodeLongHeader;
  const consumeHeader = internals._consumeHeader;
  const applyLongHeaders = internals._applyLongHeaders;
  if (typeof decode !== 'function' || typeof consumeHeader !== 'function' || typeof applyLongHeaders !== 'function') {
    // A tar-stream upgrade changed its internals: fail loudly rather than misread layers silently.
    throw new MyBuildError('INTERNAL', 'tar-stream lacks the _decodeLongHeader, _consumeHeader or _applyLongHeaders hook this reader needs');
  }
  let local: PaxRecords | undefined;
  let zeroBlock = false;
  internals._decodeLongHeader = function (this: ExtractInternals, buf: Buffer): void {
    const type = this._header?.type;
    if (type === 'pax-global-header') return;
    if (type === 'pax-header') local = parsePaxRecords(buf);
    decode.call(this, buf);
  };
  internals._consumeHeader = function (this: ExtractInternals): boolean {
    const more = consumeHeader.call(this);
    if (this._header === null) zeroBlock = true; // tar-stream decodes a zero block as null and skips it
    return more;
  };
  internals._applyLongHeaders = function (this: ExtractInternals): void {
    applyLongHeaders.call(this);
    const h = this._header;
    if (!h) return;
    if (h.type !== null && HEADER_ONLY.has(h.type)) h.size = 0;
    else if (typeof h.size !== 'number') h.size = Number.NaN; // unreadable: tar-stream's "Invalid header", not a 0-byte body
  };
  return {
    extract,
    recordsFor(header) {
      if (zeroBlock) {
        throw new MyBuildError('INVALID_ARGUMENT', `layer tar has an entry (${JSON.stringify(header.name.slice(0, 200))}) after a zero block, its end-of-archive marker`, {
          where: what,
          hint: 'docker and other tar readers stop at the marker and never see such entries; the layer is malformed or crafted',
        });
      }
      // tar-stream sets header.pax exactly when a local PAX header preceded this entry.
      const own = header.pax ? local : undefined;
      local = undefined;
      return own ?? EMPTY;
    },
  };
}
