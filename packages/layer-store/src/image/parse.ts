import {
  type ContainerConfig,
  type Descriptor,
  type ImageConfig,
  type ImageIndex,
  type ImageManifest,
  type Platform,
  MyBuildError,
  isDigest,
  isIndexMediaType,
  isManifestMediaType,
} from '@mybuild/oci';

/**
 * Defensive parsers for the JSON documents the store reads back: a manifest, index or
 * config is input like any other, so its shape is checked before any field is trusted.
 * Every failure is INVALID_ARGUMENT with `where` = the document (usually its digest).
 */

type Json = Record<string, unknown>;

function invalid(what: string, why: string, where: string): MyBuildError {
  return new MyBuildError('INVALID_ARGUMENT', `invalid ${what}: ${why}`, {
    where,
    hint: 'the document is damaged or not what its media type says; pull or build the image again',
  });
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** JSON.parse with the failure turned into INVALID_ARGUMENT. */
export function parseJsonObject(bytes: Uint8Array | string, what: string, where: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(typeof bytes === 'string' ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (err) {
    throw invalid(what, `not JSON (${(err as Error).message.split('\n')[0]})`, where);
  }
  if (!isObject(value)) throw invalid(what, 'not a JSON object', where);
  return value;
}

function stringMap(v: unknown, field: string, what: string, where: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v) || !Object.values(v).every((x) => typeof x === 'string')) {
    throw invalid(what, `${field} must be an object of strings`, where);
  }
  return v as Record<string, string>;
}

function stringArray(v: unknown, field: string, what: string, where: string): string[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw invalid(what, `${field} must be an array of strings`, where);
  return v as string[];
}

function platformOf(v: unknown, field: string, what: string, where: string): Platform | undefined {
  if (v === undefined) return undefined;
  if (!isObject(v) || typeof v.os !== 'string' || typeof v.architecture !== 'string') {
    throw invalid(what, `${field} must have string os and architecture`, where);
  }
  if (v.variant !== undefined && typeof v.variant !== 'string') throw invalid(what, `${field}.variant must be a string`, where);
  return v as unknown as Platform;
}

/** Check one descriptor: mediaType, digest, size (and the optional fields' types). */
export function parseDescriptor(v: unknown, field: string, what: string, where: string): Descriptor {
  if (!isObject(v)) throw invalid(what, `${field} is not a descriptor object`, where);
  if (typeof v.mediaType !== 'string' || v.mediaType.length === 0) throw invalid(what, `${field}.mediaType is missing`, where);
  if (!isDigest(v.digest)) throw invalid(what, `${field}.digest is not a digest`, where);
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) throw invalid(what, `${field}.size is not a size`, where);
  stringArray(v.urls, `${field}.urls`, what, where);
  stringMap(v.annotations, `${field}.annotations`, what, where);
  platformOf(v.platform, `${field}.platform`, what, where);
  return v as unknown as Descriptor;
}

function checkMediaType(doc: Json, ok: (mt: string) => boolean, what: string, where: string): void {
  if (doc.mediaType !== undefined && (typeof doc.mediaType !== 'string' || !ok(doc.mediaType))) {
    throw invalid(what, `mediaType ${JSON.stringify(doc.mediaType)} is not one of an ${what}`, where);
  }
}

export function parseImageManifest(bytes: Uint8Array | string, where: string): ImageManifest {
  const what = 'image manifest';
  const doc = parseJsonObject(bytes, what, where);
  if (doc.schemaVersion !== 2) throw invalid(what, `schemaVersion is ${JSON.stringify(doc.schemaVersion)}, not 2`, where);
  checkMediaType(doc, isManifestMediaType, what, where);
  parseDescriptor(doc.config, 'config', what, where);
  if (!Array.isArray(doc.layers)) throw invalid(what, 'layers is not an array', where);
  doc.layers.forEach((l, i) => parseDescriptor(l, `layers[${i}]`, what, where));
  if (doc.subject !== undefined) parseDescriptor(doc.subject, 'subject', what, where);
  stringMap(doc.annotations, 'annotations', what, where);
  return doc as unknown as ImageManifest;
}

export function parseImageIndex(bytes: Uint8Array | string, where: string): ImageIndex {
  const what = 'image index';
  const doc = parseJsonObject(bytes, what, where);
  if (doc.schemaVersion !== 2) throw invalid(what, `schemaVersion is ${JSON.stringify(doc.schemaVersion)}, not 2`, where);
  checkMediaType(doc, isIndexMediaType, what, where);
  if (!Array.isArray(doc.manifests)) throw invalid(what, 'manifests is not an array', where);
  doc.manifests.forEach((m, i) => parseDescriptor(m, `manifests[${i}]`, what, where));
  if (doc.subject !== undefined) parseDescriptor(doc.subject, 'subject', what, where);
  stringMap(doc.annotations, 'annotations', what, where);
  return doc as unknown as ImageIndex;
}

function checkContainerConfig(v: unknown, what: string, where: string): void {
  if (v === undefined || v === null) return;
  if (!isObject(v)) throw invalid(what, 'config is not an object', where);
  const c = v as Json;
  stringArray(c.Env ?? undefined, 'config.Env', what, where);
  for (const f of ['Cmd', 'Entrypoint', 'Shell', 'OnBuild'] as const) {
    if (c[f] !== null) stringArray(c[f], `config.${f}`, what, where);
  }
  for (const f of ['User', 'WorkingDir', 'StopSignal'] as const) {
    if (c[f] !== undefined && typeof c[f] !== 'string') throw invalid(what, `config.${f} must be a string`, where);
  }
  stringMap(c.Labels, 'config.Labels', what, where);
  for (const f of ['ExposedPorts', 'Volumes'] as const) {
    if (c[f] !== undefined && c[f] !== null && !isObject(c[f])) throw invalid(what, `config.${f} must be an object`, where);
  }
}

export function parseImageConfig(bytes: Uint8Array | string, where: string): ImageConfig {
  const what = 'image config';
  const doc = parseJsonObject(bytes, what, where);
  if (typeof doc.architecture !== 'string') throw invalid(what, 'architecture is missing', where);
  if (typeof doc.os !== 'string') throw invalid(what, 'os is missing', where);
  const rootfs = doc.rootfs;
  if (!isObject(rootfs) || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) {
    throw invalid(what, 'rootfs must be {"type":"layers","diff_ids":[...]}', where);
  }
  rootfs.diff_ids.forEach((d, i) => {
    if (!isDigest(d)) throw invalid(what, `rootfs.diff_ids[${i}] is not a digest`, where);
  });
  checkContainerConfig(doc.config as ContainerConfig | undefined, what, where);
  if (doc.history !== undefined && (!Array.isArray(doc.history) || !doc.history.every(isObject))) {
    throw invalid(what, 'history must be an array of objects', where);
  }
  if (doc.created !== undefined && typeof doc.created !== 'string') throw invalid(what, 'created must be a string', where);
  return doc as unknown as ImageConfig;
}

