import {
  type Digest,
  MyBuildError,
  isConfigMediaType,
  isDigest,
  isIndexMediaType,
  isLayerMediaType,
  isManifestMediaType,
} from '@mybuild/oci';
import type { ContentStore } from '../api.js';
import { MAX_JSON_BLOB } from '../content/json.js';

/** A blob to start marking from; `mediaType` is unknown for extra roots (the kind is then sniffed). */
export interface Root {
  digest: Digest;
  mediaType?: string | undefined;
}

interface Node {
  present: boolean;
  size: number;
  children: Root[];
  /** config's rootfs.diff_ids (only for configs) */
  diffIds?: Digest[];
  /** for a manifest: its config digest */
  config?: Digest;
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function digestsOf(list: unknown): Root[] {
  if (!Array.isArray(list)) return [];
  return list.flatMap((d) =>
    isObject(d) && isDigest(d.digest) ? [{ digest: d.digest, mediaType: typeof d.mediaType === 'string' ? d.mediaType : undefined }] : [],
  );
}

/**
 * Walks the graph index → manifests → config + layers, reading each manifest, index and
 * config once (capped, digest-checked). Blobs that are absent (foreign layers, platforms
 * never pulled) end the walk quietly. A manifest or index that is present but unreadable
 * is an error in `strict` mode — a collector that cannot see a root's children must not
 * sweep them — and a leaf otherwise.
 */
export class Marker {
  readonly #content: ContentStore;
  readonly #strict: boolean;
  readonly #nodes = new Map<Digest, Promise<Node>>();

  constructor(content: ContentStore, opts: { strict: boolean }) {
    this.#content = content;
    this.#strict = opts.strict;
  }

  /** Every present blob reachable from `roots` (the roots included). */
  async reach(roots: Iterable<Root>): Promise<Set<Digest>> {
    const out = new Set<Digest>();
    const queue = [...roots];
    for (let r = queue.shift(); r !== undefined; r = queue.shift()) {
      if (out.has(r.digest)) continue;
      const node = await this.node(r);
      if (!node.present) continue;
      out.add(r.digest);
      queue.push(...node.children);
    }
    return out;
  }

  /** The config digest of a manifest already walked. */
  async configOf(r: Root): Promise<Digest | undefined> {
    return (await this.node(r)).config;
  }

  /** diff_ids of every config among `digests` (configs seen while walking). */
  async diffIdStacks(digests: Iterable<Digest>): Promise<Digest[][]> {
    const out: Digest[][] = [];
    for (const d of digests) {
      const node = await this.#nodes.get(d);
      if (node?.diffIds) out.push(node.diffIds);
    }
    return out;
  }

  node(r: Root): Promise<Node> {
    let p = this.#nodes.get(r.digest);
    if (!p) {
      p = this.#load(r);
      this.#nodes.set(r.digest, p);
    }
    return p;
  }

  async #load(r: Root): Promise<Node> {
    let size: number;
    try {
      size = (await this.#content.info(r.digest)).size;
    } catch (err) {
      if (err instanceof MyBuildError && err.code === 'NOT_FOUND') return { present: false, size: 0, children: [] };
      throw err;
    }
    const mt = r.mediaType;
    const leaf: Node = { present: true, size, children: [] };
    if (mt !== undefined && isLayerMediaType(mt)) return leaf;
    const known = isIndexMediaType(mt) || isManifestMediaType(mt) || isConfigMediaType(mt);
    if (!known && size > MAX_JSON_BLOB) return leaf; // an unknown big blob: a layer or an artifact's data
    let doc: Json;
    try {
      const value: unknown = JSON.parse((await this.#content.readBytes(r.digest, MAX_JSON_BLOB)).toString('utf8'));
      if (!isObject(value)) throw new Error('not a JSON object');
      doc = value;
    } catch (err) {
      if (!known) return leaf;
      if (!this.#strict) return leaf;
      throw new MyBuildError('INVALID_ARGUMENT', `cannot read ${mt} (${(err as Error).message.split('\n')[0]})`, {
        where: r.digest,
        cause: err,
        hint: 'remove the image that names it (mybuild rmi), then prune again',
      });
    }
    const docType = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
    const isIndex = isIndexMediaType(mt) || (!known && (isIndexMediaType(docType) || Array.isArray(doc.manifests)));
    const isManifest = isManifestMediaType(mt) || (!known && (isManifestMediaType(docType) || (isObject(doc.config) && Array.isArray(doc.layers))));
    if (isIndex) return { ...leaf, children: digestsOf(doc.manifests) };
    if (isManifest) {
      const config = digestsOf([doc.config]);
      return { ...leaf, children: [...config, ...digestsOf(doc.layers)], ...(config[0] ? { config: config[0].digest } : {}) };
    }
    const rootfs = doc.rootfs;
    if (isObject(rootfs) && Array.isArray(rootfs.diff_ids) && rootfs.diff_ids.every(isDigest)) {
      return { ...leaf, diffIds: rootfs.diff_ids };
    }
    return leaf;
  }
}
