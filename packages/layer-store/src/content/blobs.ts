/**
 * `@mybuild/oci`'s BlobSink / BlobSource over a content store, so that code speaking only those
 * interfaces (the registry client's pull and push) reads from and writes into the store
 * without knowing it: a pull streams each blob through the store's ingest (hashed, size-checked,
 * fsynced, renamed), a push reads committed blobs.
 */
import type { Readable } from 'node:stream';
import { type BlobSink, type BlobSource, type Descriptor, type Digest, MyBuildError } from '@mybuild/oci';
import type { ContentStore } from '../api.js';

export interface ContentBlobSourceOptions {
  /**
   * Hash every blob while it is read and fail the stream at its end when the file no longer
   * matches its digest (default true). Store blobs are verified when written and read-only;
   * a consumer that checks the digest itself (a registry does, on upload) may turn this off
   * to save a pass of sha256 over the data. The size is always checked before reading.
   */
  verify?: boolean;
}

/** A BlobSink writing into the content store: `has` looks the digest up, `put` and `putBytes` verify size and digest. */
export function contentBlobSink(content: ContentStore): BlobSink {
  return {
    has: (digest: Digest) => content.has(digest),
    async put(desc: Descriptor, data: Readable): Promise<void> {
      await content.put(data, { digest: desc.digest, size: desc.size });
    },
    // no ingest for bytes in memory (a write and a rename, not a resumable upload)
    async putBytes(desc: Descriptor, data: Uint8Array): Promise<void> {
      if (data.byteLength !== desc.size) {
        throw new MyBuildError('INVALID_ARGUMENT', `blob has ${data.byteLength} bytes but its descriptor says ${desc.size}`, { where: desc.digest });
      }
      await content.putBytes(data, desc.digest);
    },
  };
}

/** A BlobSource reading committed blobs from the content store (NOT_FOUND when absent). */
export function contentBlobSource(content: ContentStore, opts: ContentBlobSourceOptions = {}): BlobSource {
  const verify = opts.verify ?? true;
  return {
    async open(desc: Descriptor): Promise<Readable> {
      const info = await content.info(desc.digest);
      if (info.size !== desc.size) {
        throw new MyBuildError('INVALID_ARGUMENT', `blob in the store has ${info.size} bytes but its descriptor says ${desc.size}`, {
          where: desc.digest,
          hint: 'the manifest does not match the blob it names; rebuild or pull the image again',
        });
      }
      return content.read(desc.digest, { verify });
    },
  };
}
