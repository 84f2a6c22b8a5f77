/**
 * Blob download: one GET streamed through a verifier (size cap + digest at the end); a broken
 * connection resumes with `Range: bytes=N-` (a 206 whose Content-Range starts at N continues, a
 * 200 starts over with the first N bytes skipped), so a layer is never held in memory and never
 * read twice from disk.
 */
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import { type Descriptor, MyBuildError, VerifyingStream } from '@mybuild/oci';
import { repositoryScope } from './auth.js';
import type { ClientContext } from './context.js';
import type { Endpoint, RequestSpec } from './endpoint.js';
import { discard, header, type RawResponse } from './http.js';
import { backoffMs, isTransientNetworkError } from './retry.js';

export interface DownloadOptions {
  /** Called with the bytes received so far. */
  onBytes?: (received: number) => void;
  /** How many times a broken transfer resumes (default 5). */
  maxResumes?: number;
  /**
   * Hash the blob and fail at its end on a digest mismatch (default true). With false only the
   * size is enforced (the stream fails as soon as a byte too many arrives, and at the end when
   * bytes are missing): for consumers that hash what they store anyway, such as a BlobSink,
   * which saves one sha256 pass over every byte.
   */
  verifyDigest?: boolean;
}

/** Counts bytes: fails as soon as more than `size` arrive, and at the end when fewer did. */
class SizeCheckStream extends Transform {
  bytes = 0;
  constructor(
    readonly size: number,
    readonly what: string,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.bytes += chunk.length;
    if (this.bytes > this.size) {
      cb(new MyBuildError('SIZE_EXCEEDED', `${this.what} is larger than the expected ${this.size} bytes`, { hint: 'the source sent more data than its descriptor declares' }));
      return;
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    cb(this.bytes === this.size ? null : new MyBuildError('SIZE_EXCEEDED', `${this.what} has ${this.bytes} bytes, expected ${this.size}`));
  }
}

/** `bytes 100-199/200` → 100. */
function contentRangeStart(res: RawResponse): number | undefined {
  const m = /^\s*bytes\s+(\d+)-\d+\/(?:\d+|\*)\s*$/i.exec(header(res, 'content-range') ?? '');
  return m ? Number(m[1]) : undefined;
}

function waitDrain(out: Transform): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('close', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
  });
}

export async function downloadBlob(ep: Endpoint, ctx: ClientContext, path: string, desc: Descriptor, where: string, opts: DownloadOptions = {}): Promise<Readable> {
  const spec = (from: number): RequestSpec => ({
    method: 'GET',
    url: `/v2/${path}/blobs/${desc.digest}`,
    scopes: [repositoryScope(path)],
    headers: from > 0 ? { range: `bytes=${from}-` } : {},
    what: `pull blob ${desc.digest}`,
    where,
  });
  const first = await ep.request(spec(0));
  if (first.status !== 200) throw await ep.fail(first, spec(0));
  const what = `blob ${desc.digest} from ${where}`;
  const out: Transform = opts.verifyDigest === false ? new SizeCheckStream(desc.size, what) : new VerifyingStream({ digest: desc.digest, size: desc.size, what });
  void pump(first);
  return out;

  async function pump(initial: RawResponse): Promise<void> {
    let current = initial;
    let received = 0;
    let skip = 0;
    let resumes = 0;
    const maxResumes = opts.maxResumes ?? 5;
    const stop = () => current.body.destroy();
    out.once('close', stop);
    for (;;) {
      let failure: unknown;
      try {
        for await (const chunk of current.body as AsyncIterable<Buffer>) {
          if (out.destroyed) return;
          let c = chunk;
          if (skip > 0) {
            if (c.length <= skip) {
              skip -= c.length;
              continue;
            }
            c = c.subarray(skip);
            skip = 0;
          }
          received += c.length;
          if (!out.write(c)) await waitDrain(out);
          opts.onBytes?.(received);
        }
        if (received >= desc.size || out.destroyed) {
          out.end();
          return;
        }
        failure = Object.assign(new Error(`connection closed after ${received} of ${desc.size} bytes`), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
      } catch (err) {
        failure = err;
      }
      if (out.destroyed) return;
      if (!isTransientNetworkError(failure) || resumes >= maxResumes) {
        out.destroy(ep.networkError(failure, spec(received)));
        return;
      }
      resumes++;
      await ctx.sleep(backoffMs(resumes - 1, ctx.retry));
      ctx.debug(`resume blob ${desc.digest} at ${received}/${desc.size}`);
      try {
        let res = await ep.request(spec(received));
        if (res.status === 206 && contentRangeStart(res) !== received) {
          // A range we did not ask for: start over from the first byte.
          discard(res);
          res = await ep.request(spec(0));
        }
        if (res.status === 206) {
          current = res;
        } else if (res.status === 200) {
          // The server ignored Range: read from the start again, dropping what we already have.
          current = res;
          skip = received;
        } else {
          out.destroy(await ep.fail(res, spec(received)));
          return;
        }
      } catch (err) {
        out.destroy(ep.networkError(err, spec(received)));
        return;
      }
    }
  }
}
