import {
  type Descriptor,
  type Digest,
  type ImageIndex,
  type Platform,
  MyBuildError,
  REF_NAME_ANNOTATION,
  isConfigMediaType,
  isDigest,
  isIndexMediaType,
  isManifestMediaType,
  parseReference,
  shortId,
  formatPlatform,
  hostPlatform,
  parsePlatform,
  selectPlatform,
} from '@mybuild/oci';
import type { ContentStore, ImageRecord, ImageStore, ResolvedImage, StorePaths } from '../api.js';
import { MAX_JSON_BLOB } from '../content/json.js';
import { entryName, mutateIndex, normalizeTagName, readIndexFile, storedName } from './indexFile.js';
import { parseDescriptor, parseImageConfig, parseImageIndex, parseImageManifest, parseJsonObject } from './parse.js';

const SHORT_ID = /^(?:sha256:)?[a-f0-9]{4,64}$/;
const FULL_HEX = /^[a-f0-9]{64}$/;
const MAX_INDEX_DEPTH = 4;

export interface ResolveOptions {
  /** `os/arch[/variant]`; default: this machine's platform. */
  platform?: string;
}

type Kind = 'index' | 'manifest';

/**
 * Images of an OCI image layout: index.json entries, tagged by the
 * `org.opencontainers.image.ref.name` annotation in docker's familiar form (`app:1.2`),
 * so `skopeo inspect oci:$ROOT:app:1.2` finds them.
 */
export class LocalImageStore implements ImageStore {
  readonly paths: StorePaths;
  readonly content: ContentStore;

  constructor(paths: StorePaths, content: ContentStore) {
    this.paths = paths;
    this.content = content;
  }

  /** Every index.json entry; an untagged one has name `''`. */
  async list(): Promise<ImageRecord[]> {
    const index = await readIndexFile(this.paths);
    return index.manifests.map((target) => ({ name: entryName(target) ?? '', target }));
  }

  /** Names (tags) pointing at `digest`. */
  async names(digest: Digest): Promise<string[]> {
    const index = await readIndexFile(this.paths);
    return namesOf(index, digest);
  }

  async tag(name: string, target: Descriptor): Promise<void> {
    const normal = normalizeTagName(name);
    const desc = this.#checkTarget(target, normal);
    await mutateIndex(this.paths, async (index) => {
      // Checked under the lock (and, first, on an unlocked read that changes nothing when the tag is
      // already there): prune holds the lock while it sweeps, so the blob cannot vanish between check and tag.
      await this.#checkPresent(desc, normal);
      const entry: Descriptor = {
        mediaType: desc.mediaType,
        digest: desc.digest,
        size: desc.size,
        ...(desc.platform ? { platform: desc.platform } : {}),
        ...(desc.artifactType ? { artifactType: desc.artifactType } : {}),
        annotations: { ...withoutNames(desc.annotations), [REF_NAME_ANNOTATION]: normal },
      };
      const out: Descriptor[] = [];
      let placed = false;
      for (const d of index.manifests) {
        if (sameEntryName(d, normal)) {
          if (!placed) out.push(entry); // keep the tag's position
          placed = true;
        } else if (!(entryName(d) === undefined && d.digest === desc.digest)) {
          out.push(d); // (an untagged entry of the now tagged target is dropped)
        }
      }
      if (!placed) out.push(entry);
      index.manifests = out;
    }, { idempotent: true });
  }

  async untag(name: string): Promise<Descriptor> {
    const normal = normalizeTagName(name);
    return mutateIndex(this.paths, (index) => {
      const found = index.manifests.filter((d) => sameEntryName(d, normal));
      if (found.length === 0) {
        throw new MyBuildError('NOT_FOUND', `no tag ${normal} in the store`, { where: name, hint: "list tags with 'mybuild images'" });
      }
      index.manifests = index.manifests.filter((d) => !sameEntryName(d, normal));
      return found[0]!;
    });
  }

  /** Record `target` in index.json without a tag (a root for prune); a no-op when an entry has its digest. */
  async add(target: Descriptor): Promise<void> {
    const desc = this.#checkTarget(target, target.digest);
    await mutateIndex(this.paths, async (index) => {
      await this.#checkPresent(desc, desc.digest);
      if (index.manifests.some((d) => d.digest === desc.digest)) return;
      const { mediaType, digest, size, platform, artifactType, annotations } = desc;
      const rest = withoutNames(annotations);
      index.manifests.push({
        mediaType,
        digest,
        size,
        ...(platform ? { platform } : {}),
        ...(artifactType ? { artifactType } : {}),
        ...(Object.keys(rest).length ? { annotations: rest } : {}),
      });
    }, { idempotent: true });
  }

  /** Remove every index.json entry (tagged or not) for the target's digest; returns how many. */
  async remove(target: Descriptor | Digest): Promise<number> {
    const digest = typeof target === 'string' ? target : target.digest;
    return mutateIndex(this.paths, (index) => {
      const before = index.manifests.length;
      index.manifests = index.manifests.filter((d) => d.digest !== digest);
      const n = before - index.manifests.length;
      if (n === 0) throw new MyBuildError('NOT_FOUND', 'no image with this digest in the store', { where: digest });
      return n;
    });
  }

  /**
   * The image a manifest or index in the content store describes (an index: its manifest for
   * the platform), whether index.json names it yet or not; `names` lists the names it has now.
   * For a caller that has just stored the image and names it meanwhile.
   */
  async load(target: Descriptor, opts: ResolveOptions = {}): Promise<ResolvedImage> {
    const platform = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
    const desc = this.#checkTarget(target, target.digest);
    return this.#load(await readIndexFile(this.paths), desc, platform);
  }

  /**
   * Resolve, in docker's order: a full digest or 64-hex ID (manifest/index digest in
   * index.json, else image ID = config digest); a tag (normalised: `app` = `app:latest` =
   * `docker.io/library/app:latest`); a `name@digest`; a short ID prefix (≥ 4 hex digits).
   */
  async resolve(refOrId: string, opts: ResolveOptions = {}): Promise<ResolvedImage> {
    const platform = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
    const index = await readIndexFile(this.paths);
    const input = refOrId.trim();

    if (isDigest(input) || FULL_HEX.test(input)) {
      const digest = (isDigest(input) ? input : `sha256:${input}`) as Digest;
      const entry = index.manifests.find((d) => d.digest === digest);
      if (entry) return this.#load(index, entry, platform);
      // an image ID, or a platform's manifest inside a tagged index
      const byId = (await this.#candidates(index)).filter((c) => c.id === digest || c.manifest.digest === digest);
      if (byId[0]) return this.#load(index, byId[0].entry, platform, byId[0].manifest);
      throw notFound(input);
    }

    let ref: ReturnType<typeof parseReference> | undefined;
    let parseError: unknown;
    try {
      ref = parseReference(input);
    } catch (err) {
      parseError = err; // may still be a short ID
    }
    if (ref) {
      const wanted = ref.digest;
      const normal = wanted === undefined ? normalizeTagName(input) : undefined;
      const entry = index.manifests.find((d) => (wanted !== undefined ? d.digest === wanted : sameEntryName(d, normal!)));
      if (entry) return this.#load(index, entry, platform);
    }

    if (SHORT_ID.test(input)) {
      const prefix = input.startsWith('sha256:') ? input : `sha256:${input}`;
      const matches = (await this.#candidates(index)).filter((c) => c.id.startsWith(prefix));
      const ids = [...new Set(matches.map((c) => c.id))];
      if (ids.length > 1) {
        throw new MyBuildError('INVALID_ARGUMENT', `short ID ${input} is ambiguous: it matches ${ids.length} images (${ids.map(shortId).join(', ')})`, {
          where: input,
          hint: 'give more digits of the image ID',
        });
      }
      const m = matches[0];
      if (m) return this.#load(index, m.entry, platform, m.manifest);
    }
    if (parseError) throw parseError;
    throw notFound(input);
  }

  /** Every (index.json entry, manifest, image ID) present locally, for lookups by ID. */
  async #candidates(index: ImageIndex): Promise<{ entry: Descriptor; manifest: Descriptor; id: Digest }[]> {
    const out: { entry: Descriptor; manifest: Descriptor; id: Digest }[] = [];
    const seen = new Set<Digest>();
    const visit = async (entry: Descriptor, d: Descriptor, depth: number): Promise<void> => {
      if (seen.has(d.digest) || depth > MAX_INDEX_DEPTH || !(await this.content.has(d.digest))) return;
      seen.add(d.digest);
      try {
        const { kind, bytes } = await this.#readDocument(d);
        if (kind === 'index') {
          for (const m of parseImageIndex(bytes, d.digest).manifests) await visit(entry, m, depth + 1);
        } else {
          out.push({ entry, manifest: d, id: parseImageManifest(bytes, d.digest).config.digest });
        }
      } catch (err) {
        // A damaged or foreign entry is not a candidate; resolving it directly reports why.
        if (!(err instanceof MyBuildError)) throw err;
      }
    };
    for (const entry of index.manifests) await visit(entry, entry, 0);
    return out;
  }

  /** Read a manifest or index; the kind comes from the media type, or from the document when the type is foreign. */
  async #readDocument(d: Descriptor): Promise<{ kind: Kind; bytes: Buffer }> {
    const bytes = await this.content.readBytes(d.digest, MAX_JSON_BLOB);
    if (bytes.length !== d.size) {
      throw new MyBuildError('INVALID_ARGUMENT', `blob has ${bytes.length} bytes but its descriptor says ${d.size}`, { where: d.digest });
    }
    if (isIndexMediaType(d.mediaType)) return { kind: 'index', bytes };
    if (isManifestMediaType(d.mediaType)) return { kind: 'manifest', bytes };
    const doc = parseJsonObject(bytes, 'manifest', d.digest);
    const mt = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
    if (isIndexMediaType(mt) || (mt === undefined && Array.isArray(doc.manifests))) return { kind: 'index', bytes };
    if (isManifestMediaType(mt) || (mt === undefined && doc.config !== undefined && Array.isArray(doc.layers))) return { kind: 'manifest', bytes };
    throw new MyBuildError('UNSUPPORTED', `${d.mediaType} is neither an image manifest nor an index`, { where: d.digest });
  }

  async #load(index: ImageIndex, entry: Descriptor, platform: Platform, chosen?: Descriptor): Promise<ResolvedImage> {
    let d = entry;
    let top: ResolvedImage['index'];
    let bytes: Buffer;
    for (let depth = 0; ; depth++) {
      const doc = await this.#readDocument(d);
      bytes = doc.bytes;
      if (doc.kind === 'manifest') break;
      if (depth >= MAX_INDEX_DEPTH) {
        throw new MyBuildError('UNSUPPORTED', `image indexes nested more than ${MAX_INDEX_DEPTH} deep`, { where: entry.digest });
      }
      const idx = parseImageIndex(bytes, d.digest);
      top ??= { descriptor: entry, index: idx };
      const next = chosen && idx.manifests.some((m) => m.digest === chosen.digest) ? chosen : selectPlatform(idx.manifests, platform);
      if (!next) {
        const available = [...new Set(idx.manifests.flatMap((m) => (m.platform ? [formatPlatform(m.platform)] : [])))];
        throw new MyBuildError('NOT_FOUND', `image index has no manifest for ${formatPlatform(platform)}`, {
          where: entryName(entry) ?? entry.digest,
          hint: available.length ? `it has ${available.join(', ')}; choose one with --platform` : 'the index names no platforms',
        });
      }
      d = next;
    }
    const manifest = parseImageManifest(bytes, d.digest);
    const configDescriptor = manifest.config;
    if (!isConfigMediaType(configDescriptor.mediaType)) {
      throw new MyBuildError('UNSUPPORTED', `not a container image: its config has media type ${configDescriptor.mediaType}`, {
        where: entryName(entry) ?? d.digest,
        hint: 'this is an OCI artifact, not something mybuild can run or build on',
      });
    }
    const configBytes = await this.content.readBytes(configDescriptor.digest, MAX_JSON_BLOB);
    if (configBytes.length !== configDescriptor.size) {
      throw new MyBuildError('INVALID_ARGUMENT', `config has ${configBytes.length} bytes but the manifest says ${configDescriptor.size}`, {
        where: configDescriptor.digest,
      });
    }
    const config = parseImageConfig(configBytes, configDescriptor.digest);
    if (config.rootfs.diff_ids.length !== manifest.layers.length) {
      throw new MyBuildError('INVALID_ARGUMENT', `manifest has ${manifest.layers.length} layers but its config names ${config.rootfs.diff_ids.length} diff IDs`, {
        where: d.digest,
      });
    }
    return {
      manifestDescriptor: d,
      manifest,
      config,
      configDescriptor,
      id: configDescriptor.digest,
      ...(top ? { index: top } : {}),
      names: namesOf(index, entry.digest),
    };
  }

  #checkTarget(target: Descriptor, where: string): Descriptor {
    const desc = parseDescriptor(target, 'target', 'descriptor', where);
    if (!isManifestMediaType(desc.mediaType) && !isIndexMediaType(desc.mediaType)) {
      throw new MyBuildError('INVALID_ARGUMENT', `cannot tag a ${desc.mediaType}: only image manifests and indexes`, { where });
    }
    return desc;
  }

  async #checkPresent(desc: Descriptor, where: string): Promise<void> {
    if (!(await this.content.has(desc.digest))) {
      throw new MyBuildError('NOT_FOUND', `manifest ${desc.digest} is not in the content store`, { where, hint: 'store the manifest before tagging it' });
    }
    const info = await this.content.info(desc.digest);
    if (info.size !== desc.size) {
      throw new MyBuildError('INVALID_ARGUMENT', `descriptor says ${desc.size} bytes but the blob has ${info.size}`, { where: desc.digest });
    }
    if (!isManifestMediaType(desc.mediaType)) return; // an index may name platforms never pulled
    // A tag must not point at an image missing a blob (e.g. swept by a prune its import raced).
    const manifest = parseImageManifest(await this.content.readBytes(desc.digest, MAX_JSON_BLOB), desc.digest);
    for (const d of [manifest.config, ...manifest.layers]) {
      if (d.urls?.length || (await this.content.has(d.digest))) continue; // foreign layers may be absent
      throw new MyBuildError('FAILED_PRECONDITION', `image ${desc.digest} lacks blob ${d.digest} (${d.mediaType})`, {
        where,
        hint: 'store every blob of the image before tagging it; importers hold withImportLease so prune cannot sweep them',
      });
    }
  }
}

function notFound(input: string): MyBuildError {
  return new MyBuildError('NOT_FOUND', `no such image: ${input}`, { where: input, hint: "list images with 'mybuild images', or pull it" });
}

/** Annotations minus the ones that name a tag (they would contradict the entry's own). */
function withoutNames(annotations: Record<string, string> | undefined): Record<string, string> {
  const rest = { ...annotations };
  delete rest[REF_NAME_ANNOTATION];
  delete rest['io.containerd.image.name'];
  return rest;
}

function sameEntryName(d: Descriptor, normal: string): boolean {
  const n = entryName(d);
  return n !== undefined && storedName(n) === normal;
}

function namesOf(index: ImageIndex, digest: Digest): string[] {
  return index.manifests.flatMap((d) => {
    const n = d.digest === digest ? entryName(d) : undefined;
    return n === undefined ? [] : [n];
  });
}
