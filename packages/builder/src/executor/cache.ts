/**
 * The build cache, under the store's `cache/`:
 *
 * ```
 * cache/build/<key>.json        one record per step result: the layer it made and when
 * cache/compressed/<hex>-<alg>.json   the compressed blob made from an uncompressed layer (export, push)
 * cache/context/<hex>.statcache stat caches of build contexts (see StatCache)
 * cache/mounts/<hex>/           RUN --mount=type=cache directories
 * ```
 *
 * A step's key is sha256 of its parent's key, the step's own key (instruction, args, env,
 * ...) and, for COPY/ADD, the content of what it copies. Each record also names a small
 * manifest (in the content store) listing every layer of the state it ends — the record's GC
 * root: `prune` keeps those blobs and, through that manifest's config, their snapshots.
 */
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createHash, type Descriptor, type Digest, errnoCode, isDigest, MediaType } from '@mybuild/oci';
import { type ContentStore, type StorePaths, putJsonBlob, writeFileAtomic } from '@mybuild/layer-store';
import { mkdir } from 'node:fs/promises';
import type { LayerRef } from './types.js';

const VERSION = 1;

export interface CacheRecord {
  v: number;
  key: string;
  /** When the layer was made (its history entry's `created`). */
  created: string;
  layer: { diffId: Digest; digest: Digest; size: number; mediaType: string };
  /** The GC root: a manifest of the whole layer chain up to this step. */
  root: Digest;
}

export interface CompressedRecord {
  v: number;
  diffId: Digest;
  desc: Descriptor;
}

/** sha256 hex of the parts, each length-prefixed (no ambiguity between parts). */
export function cacheKey(...parts: string[]): string {
  const h = createHash('sha256');
  for (const p of parts) h.update(`${Buffer.byteLength(p)}:${p}`);
  return h.digest('hex');
}

export class BuildCache {
  readonly #paths: StorePaths;
  readonly #content: ContentStore;

  constructor(paths: StorePaths, content: ContentStore) {
    this.#paths = paths;
    this.#content = content;
  }

  #recordFile(key: string): string {
    return join(this.#paths.cache, 'build', `${key}.json`);
  }

  /** The record for `key` when it and its layer blob are there. */
  async get(key: string): Promise<CacheRecord | undefined> {
    let rec: CacheRecord;
    try {
      rec = JSON.parse(readFileSync(this.#recordFile(key), 'utf8')) as CacheRecord;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || err instanceof SyntaxError) return undefined;
      throw err;
    }
    if (rec.v !== VERSION || rec.key !== key || !isDigest(rec.layer?.digest) || !isDigest(rec.layer?.diffId)) return undefined;
    if (!(await this.#content.has(rec.layer.digest))) return undefined;
    return rec;
  }

  /** Record the result of a step: `layers` is the whole chain, the step's layer last. */
  async put(key: string, layers: LayerRef[], created: string, platform: { os: string; architecture: string }): Promise<CacheRecord> {
    const top = layers[layers.length - 1]!;
    const config = await putJsonBlob(
      this.#content,
      { architecture: platform.architecture, os: platform.os, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) } },
      MediaType.OciConfig,
    );
    const manifest = await putJsonBlob(this.#content, {
      schemaVersion: 2,
      mediaType: MediaType.OciManifest,
      config: { mediaType: config.mediaType, digest: config.digest, size: config.size },
      layers: layers.map((l) => ({ mediaType: l.desc.mediaType, digest: l.desc.digest, size: l.desc.size })),
    });
    const rec: CacheRecord = {
      v: VERSION,
      key,
      created,
      layer: { diffId: top.diffId, digest: top.desc.digest, size: top.desc.size, mediaType: top.desc.mediaType },
      root: manifest.digest,
    };
    await mkdir(join(this.#paths.cache, 'build'), { recursive: true });
    await writeFileAtomic(this.#recordFile(key), JSON.stringify(rec));
    return rec;
  }

  #compressedFile(diffId: Digest, compression: string): string {
    return join(this.#paths.cache, 'compressed', `${diffId.slice(diffId.indexOf(':') + 1)}-${compression}.json`);
  }

  async getCompressed(diffId: Digest, compression: string): Promise<Descriptor | undefined> {
    try {
      const rec = JSON.parse(readFileSync(this.#compressedFile(diffId, compression), 'utf8')) as CompressedRecord;
      if (rec.v !== VERSION || rec.diffId !== diffId || !isDigest(rec.desc?.digest)) return undefined;
      return (await this.#content.has(rec.desc.digest)) ? rec.desc : undefined;
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || err instanceof SyntaxError) return undefined;
      throw err;
    }
  }

  async putCompressed(diffId: Digest, compression: string, desc: Descriptor): Promise<void> {
    await mkdir(join(this.#paths.cache, 'compressed'), { recursive: true });
    await writeFileAtomic(this.#compressedFile(diffId, compression), JSON.stringify({ v: VERSION, diffId, desc } satisfies CompressedRecord));
  }
}

/**
 * Drop the whole build cache (`prune --all`): step records, compressed-layer records, the
 * contexts' stat caches and `RUN --mount=type=cache` directories. Call it under the store's
 * exclusive GC lock (prune's `extraRoots` runs there), where no build holds a lease; the blobs
 * and snapshots it kept are then collected by the same prune. Returns the records removed.
 */
export function dropBuildCache(paths: StorePaths): number {
  let records = 0;
  for (const dir of ['build', 'compressed']) {
    try {
      records += readdirSync(join(paths.cache, dir)).filter((n) => n.endsWith('.json')).length;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
  }
  for (const dir of ['build', 'compressed', 'context', 'mounts']) rmSync(join(paths.cache, dir), { recursive: true, force: true });
  return records;
}

/**
 * The build cache's GC roots, for `openStore(root, { extraRoots: () => cacheRoots(paths) })`:
 * every record's chain manifest and every compressed layer made for an export. Prune then
 * keeps their blobs and the snapshots of their chains.
 */
export async function cacheRoots(paths: StorePaths): Promise<Digest[]> {
  const out: Digest[] = [];
  for (const [dir, pick] of [
    ['build', (r: unknown) => (r as CacheRecord).root],
    ['compressed', (r: unknown) => (r as CompressedRecord).desc?.digest],
  ] as const) {
    let names: string[];
    try {
      names = readdirSync(join(paths.cache, dir));
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') continue;
      throw err;
    }
    for (const name of names) {
      if (!name.endsWith('.json')) continue;
      try {
        const d = pick(JSON.parse(readFileSync(join(paths.cache, dir, name), 'utf8')));
        if (isDigest(d)) out.push(d);
      } catch {
        // a damaged record roots nothing
      }
    }
  }
  return out;
}
