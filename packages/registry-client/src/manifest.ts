/**
 * Manifests as the registry API carries them: the Accept list, size caps, parsing with
 * validation (schema1 refused), and platform selection from an index.
 */
import {
  type Descriptor,
  type ImageIndex,
  type ImageManifest,
  isIndexMediaType,
  isManifestMediaType,
  MediaType,
  MyBuildError,
  parseDigest,
  type Platform,
  formatPlatform,
  normalizePlatform,
  platformScore,
  selectPlatform,
} from '@mybuild/oci';

export { formatPlatform, hostPlatform, normalizePlatform, parsePlatform } from '@mybuild/oci';

/** Every manifest type the client understands, for `Accept`. Schema 1 is deliberately absent. */
export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerManifestList, MediaType.DockerManifest].join(', ');

/** Largest manifest the client pushes (what registries such as GHCR and distribution accept). */
export const MAX_MANIFEST_PUSH = 4 << 20;
/** Largest manifest the client reads: a little more than it would push. */
export const MAX_MANIFEST_PULL = 5 << 20;

export type AnyManifest = ImageManifest | ImageIndex;

export function isIndex(m: AnyManifest): m is ImageIndex {
  return Array.isArray((m as ImageIndex).manifests);
}

/** `application/vnd.oci.image.manifest.v1+json; charset=utf-8` → the bare type, lower case. */
export function bareMediaType(contentType: string | undefined): string | undefined {
  const t = contentType?.split(';', 1)[0]?.trim().toLowerCase();
  return t ? t : undefined;
}

function invalid(where: string, why: string): MyBuildError {
  return new MyBuildError('INVALID_ARGUMENT', `invalid manifest: ${why}`, { where });
}

function schema1(where: string): MyBuildError {
  return new MyBuildError('UNSUPPORTED', 'the image uses the Docker schema 1 manifest format, which is deprecated and not supported', {
    where,
    hint: 'pull and push it again with a current docker, skopeo or mybuild to convert it to schema 2 or OCI',
  });
}

function checkDescriptor(d: unknown, where: string, what: string): asserts d is Descriptor {
  if (typeof d !== 'object' || d === null) throw invalid(where, `${what} is not an object`);
  const desc = d as Record<string, unknown>;
  if (typeof desc.mediaType !== 'string' || desc.mediaType === '') throw invalid(where, `${what} has no mediaType`);
  if (typeof desc.digest !== 'string') throw invalid(where, `${what} has no digest`);
  parseDigest(desc.digest, where);
  if (typeof desc.size !== 'number' || !Number.isSafeInteger(desc.size) || desc.size < 0) throw invalid(where, `${what} has an invalid size`);
}

/**
 * Parse and check a manifest or index from its raw bytes. `contentType` is the response's
 * Content-Type (or the media type the caller expects); the body's own `mediaType` wins when set.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | undefined, where: string): { mediaType: string; manifest: AnyManifest } {
  const ct = bareMediaType(contentType);
  if (ct === MediaType.DockerSchema1 || ct === MediaType.DockerSchema1Signed) throw schema1(where);
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch {
    throw invalid(where, 'not JSON');
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw invalid(where, 'not a JSON object');
  const obj = json as Record<string, unknown>;
  if (obj.schemaVersion === 1) throw schema1(where);
  if (obj.schemaVersion !== 2) throw invalid(where, `schemaVersion ${JSON.stringify(obj.schemaVersion)} is not 2`);
  const declared = typeof obj.mediaType === 'string' ? obj.mediaType : undefined;
  let mediaType = declared ?? ct;
  if (!isIndexMediaType(mediaType) && !isManifestMediaType(mediaType)) {
    // Some registries answer application/json or nothing: infer from the shape (OCI allows an absent mediaType).
    if (Array.isArray(obj.manifests)) mediaType = MediaType.OciIndex;
    else if (typeof obj.config === 'object' && Array.isArray(obj.layers)) mediaType = MediaType.OciManifest;
    else throw new MyBuildError('UNSUPPORTED', `unsupported manifest type ${JSON.stringify(mediaType ?? 'none')}`, { where });
  }
  if (isIndexMediaType(mediaType)) {
    if (!Array.isArray(obj.manifests)) throw invalid(where, 'an index without manifests[]');
    obj.manifests.forEach((d, i) => checkDescriptor(d, where, `manifests[${i}]`));
  } else {
    checkDescriptor(obj.config, where, 'config');
    if (!Array.isArray(obj.layers)) throw invalid(where, 'a manifest without layers[]');
    obj.layers.forEach((d, i) => checkDescriptor(d, where, `layers[${i}]`));
  }
  if (obj.subject !== undefined) checkDescriptor(obj.subject, where, 'subject');
  return { mediaType: mediaType!, manifest: obj as unknown as AnyManifest };
}

/** True when `candidate` is exactly `want` once both are normalised. */
export function platformMatches(candidate: Platform | undefined, want: Platform): boolean {
  return platformScore(candidate, want) === 2;
}

/** The entry of `index` for `want` (attestations and unknown platforms skipped). */
export function selectManifest(index: ImageIndex, want: Platform, where: string): Descriptor {
  const found = selectPlatform(index.manifests, want);
  if (found) return found;
  const available = index.manifests
    .filter((d) => d.platform && d.platform.os !== 'unknown')
    .map((d) => formatPlatform(normalizePlatform(d.platform!)));
  throw new MyBuildError('NOT_FOUND', `no manifest for platform ${formatPlatform(normalizePlatform(want))}`, {
    where,
    hint: available.length > 0 ? `the image has ${[...new Set(available)].join(', ')}; choose one with --platform` : 'the index names no platforms',
  });
}
