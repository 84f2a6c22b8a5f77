/**
 * `mybuild build`: plan the Dockerfile, resolve its images (store, else registry), hash what
 * COPY takes from the context, run the needed stages (independent ones side by side) step by
 * step — each step's result looked up in the build cache first — then store the image and
 * name it. The planner knows the Dockerfile; this file only runs the plan.
 */
import { existsSync, realpathSync, rmSync } from 'node:fs';
import { basename, join } from 'node:path';
import { createHash, formatReference, type HistoryEntry, isoTime, MyBuildError, parseNormalizedReference, withDefaultTag } from '@mybuild/oci';
import { chainId, sys } from '@mybuild/layer-store';
import { loadDockerignore } from '../frontend/dockerignore.js';
import { parseDockerfile } from '../frontend/instructions.js';
import { planBuild } from '../frontend/planner.js';
import type { BuildPlan, CopyStep, PlanStep, PlannedStage, RunStep } from '../frontend/plan-types.js';
import { formatPlatform, type PlatformSpec } from '../frontend/platform.js';
import { defaultSandboxStateDir } from '../sandbox/runInSandbox.js';
import { defaultRuntime, runtimeFile } from '../sandbox/runc.js';
import { download } from './addSources.js';
import { BuildCache, cacheKey } from './cache.js';
import { checkTags, nameImage, writeImage } from './commit.js';
import { BuildStepError, shortInstruction } from './errors.js';
import { type BaseImage, resolveImage } from './images.js';
import { Reporter, type Vertex } from './reporter.js';
import { Snapshots } from './snapshots.js';
import { FileSource } from './source.js';
import { StatCache } from './statCache.js';
import { loadDonor, saveDonor } from './donor.js';
import { type CopyReuse, type ExecContext, copyMayReuse, copySourcesHash, execCopy, execRun, execWorkdir, normalizeSource, resolveCopySources } from './steps.js';
import type { BuildOptions, BuildResult, LayerRef } from './types.js';
import { nowMs } from '../clock.js';

/** A stage's filesystem and history as its steps leave them. */
interface StageState {
  layers: LayerRef[];
  /** the cache key of the last filesystem step (or of the base) */
  key: string;
  history: HistoryEntry[];
}

const MAX_RESOLVE_ROUNDS = 8;

export async function build(opts: BuildOptions): Promise<BuildResult> {
  const store = opts.store;
  const fileName = opts.fileName ?? 'Dockerfile';
  const tags = checkTags(opts.tags ?? []);
  const reporter = new Reporter(opts.onEvent);
  const stateDir = opts.sandbox?.stateDir ?? defaultSandboxStateDir();
  const snapshots = new Snapshots(store, stateDir);
  const cache = new BuildCache(store.paths, store.content);
  opts.signal?.throwIfAborted();
  // Pulled base images are named in the store (tagged, as `mybuild pull` would) while the build
  // goes on; the build waits for that before it names its own image, and never ends before it.
  const namings: Promise<void>[] = [];
  let namingError: { err: unknown } | undefined;
  const naming = (done: Promise<void>): void => {
    namings.push(done.catch((err: unknown) => void (namingError ??= { err })));
  };
  /** Every naming started so far has ended, including ones started while waiting (a pull still running). */
  const settled = async (): Promise<void> => {
    for (let n = 0; n < namings.length; ) {
      const batch = namings.slice(n);
      n = namings.length;
      await Promise.all(batch); // each one's error is caught into namingError
    }
  };
  const named = async (): Promise<void> => {
    await settled();
    if (namingError) throw namingError.err;
  };
  // The build never ends before its namings; its own error is the one to report, and a failed
  // naming of a base image is said beside it.
  const withNamings = <T>(fn: () => Promise<T>) => async (): Promise<T> => {
    let failed: { err: unknown } | undefined;
    try {
      return await fn();
    } catch (err) {
      failed = { err };
      throw err;
    } finally {
      await settled();
      if (failed && namingError && namingError.err !== failed.err) reporter.warning(`a pulled base image was not named in the store: ${errText(namingError.err)}`);
    }
  };

  return store.withImportLease(withNamings(async () => {
    const def = reporter.vertex(`[internal] load build definition from ${basename(opts.dockerfilePath ?? fileName)}`);
    def.status(`transferring dockerfile: ${Buffer.byteLength(opts.dockerfile)}B done`);
    const { plan, bases } = await planWithImages(opts, fileName, reporter, def, naming, named);

    for (const w of plan.warnings) reporter.warning(w.message, w.where);

    // .dockerignore and the build context
    const ign = reporter.vertex('[internal] load .dockerignore');
    const ignore = await loadDockerignore(opts.contextDir, opts.dockerfilePath).catch((err: unknown) => {
      ign.fail(errText(err));
      throw err;
    });
    ign.status(`transferring context: ${ignore.matcher.patterns.length} pattern(s) done`);
    ign.done();
    let contextSource: FileSource | undefined;
    let statCache: StatCache | undefined;
    const context = (): FileSource => {
      if (!contextSource) {
        const dir = realpathSync(opts.contextDir);
        statCache = opts.noCache ? StatCache.memory() : StatCache.load(join(store.paths.cache, 'context', `${sha256(dir)}.statcache`));
        contextSource = new FileSource(dir, { ignore: ignore.matcher, statCache, resetOwner: true });
      }
      return contextSource;
    };
    const contextKeys = hashContext(plan, context, reporter, fileName);
    await statCache?.save();

    // stages
    const internal = new AbortController();
    const signal = opts.signal ? AbortSignal.any([opts.signal, internal.signal]) : internal.signal;
    const results = new Map<number, Promise<StageState>>();
    const counts = { run: 0, cached: 0 };
    const limit = semaphore(Math.max(1, opts.concurrency ?? 2));
    const byIndex = new Map(plan.stages.map((s) => [s.index, s]));
    const stageResult = (index: number): Promise<StageState> => {
      const p = results.get(index);
      if (!p) throw new MyBuildError('INTERNAL', `stage ${index} is not part of the build`);
      return p;
    };
    let warmed = !plan.stages.some((st) => st.steps.some((step) => step.kind === 'run'));
    const x: ExecContext = {
      opts: { ...opts, signal },
      store,
      snapshots,
      fileName,
      stateDir,
      context,
      stageLayers: async (index) => (await stageResult(index)).layers,
      downloads: new Map(),
      imageLayers: (ref, platform) => {
        const b = bases.get(imageKey(ref, platform));
        if (!b) throw new MyBuildError('INTERNAL', `image ${ref} was not resolved`);
        return b.layers;
      },
      // At the first step that runs, when RUN steps may follow: start reading the OCI runtime's
      // binary (8 MB, runc runs it twice per step) from disk, so that the first RUN after a cold
      // start does not wait for it (~10 ms here).
      missed: () => {
        if (warmed) return;
        warmed = true;
        try {
          const file = runtimeFile(opts.sandbox?.runtime ?? defaultRuntime());
          if (file !== undefined) sys().prefetch([file]).catch(() => 0);
        } catch {
          // only a hint to the kernel
        }
      },
    };
    // BuildKit names steps `[stage 2/5]` when the Dockerfile has more than one stage
    const multiStage = parseDockerfile(opts.dockerfile).stages.length > 1;
    let firstError: unknown;
    for (const stage of plan.stages) {
      const run = (async () => {
        for (const dep of stage.dependsOn) await stageResult(dep);
        signal.throwIfAborted();
        return limit(() => runStage(x, stage, multiStage, bases, stageResult, contextKeys, cache, reporter, counts));
      })();
      // the first failure stops the other stages (their RUN processes are killed)
      run.catch((err: unknown) => {
        if (!internal.signal.aborted) {
          firstError ??= err;
          internal.abort(err);
        }
      });
      results.set(stage.index, run);
    }
    await Promise.allSettled(results.values());
    if (firstError !== undefined) throw firstError;
    await named();
    await statCache?.save();
    const final = await stageResult(plan.target);
    const target = byIndex.get(plan.target)!;

    // the image
    const exp = reporter.vertex('exporting to image');
    // The layers of the steps that ran are their snapshots' files (deferred blobs): on disk
    // before an image names them, in one syncfs rather than an fsync per file.
    if (counts.run > 0) await sys().syncfs(store.paths.snapshots);
    exp.status('exporting layers done');
    const committed = await writeImage(store, {
      os: target.image.os,
      architecture: target.image.architecture,
      ...(target.image.variant ? { variant: target.image.variant } : {}),
      ...(target.image.author ? { author: target.image.author } : {}),
      config: target.image.config,
      layers: final.layers,
      history: final.history,
    });
    exp.status(`writing image ${committed.configDesc.digest} done`);
    await nameImage(store, committed.manifest, tags);
    for (const t of tags) exp.status(`naming to ${t} done`);
    exp.done();
    return {
      imageId: committed.configDesc.digest,
      manifest: committed.manifest,
      config: committed.config,
      tags,
      stepsRun: counts.run,
      stepsCached: counts.cached,
    };
  }));
}

/** Plan, fetch the images the plan names, plan again with their configs (ENV, WORKDIR, ONBUILD...). */
async function planWithImages(
  opts: BuildOptions,
  fileName: string,
  reporter: Reporter,
  def: Vertex,
  naming: (done: Promise<void>) => void,
  named: () => Promise<void>,
): Promise<{ plan: BuildPlan; bases: Map<string, BaseImage> }> {
  const bases = new Map<string, BaseImage>();
  const planOpts = {
    fileName,
    ...(opts.buildArgs ? { buildArgs: opts.buildArgs } : {}),
    ...(opts.target ? { target: opts.target } : {}),
    ...(opts.labels ? { labels: opts.labels } : {}),
    ...(opts.platform ? { platform: opts.platform } : {}),
    resolveImage: (ref: string, platform: PlatformSpec) => bases.get(imageKey(ref, platform))?.config,
  };
  let plan: BuildPlan;
  try {
    plan = planBuild(opts.dockerfile, planOpts);
  } catch (err) {
    def.fail(errText(err));
    throw err;
  }
  def.done();
  for (let round = 0; ; round++) {
    const missing = plan.images.filter((i) => !bases.has(imageKey(i.ref, i.platform)));
    if (missing.length === 0) return { plan, bases };
    if (round >= MAX_RESOLVE_ROUNDS) throw new MyBuildError('INTERNAL', 'images keep appearing while planning (ONBUILD loop?)');
    // a later round may name an image an earlier one pulled (another spelling of it): in the store by then
    if (round > 0) await named();
    await Promise.all(
      missing.map(async (img) => {
        const v = reporter.vertex(`[internal] load metadata for ${displayRef(img.ref)}`);
        try {
          bases.set(imageKey(img.ref, img.platform), await resolveImage(opts.store, img.ref, img.platform, { pull: opts.pull ?? false, registry: opts.registry, onStatus: (t) => v.status(t), naming }));
          v.done();
        } catch (err) {
          v.fail(errText(err));
          const stage = plan.stages.find((s) => img.usedBy.includes(s.index));
          if (err instanceof MyBuildError && stage && err.where === undefined) {
            throw new MyBuildError(err.code, `FROM ${img.ref}: ${err.message}`, { where: `${fileName}:${stage.line}`, ...(err.hint ? { hint: err.hint } : {}), cause: err });
          }
          throw err;
        }
      }),
    );
    plan = planBuild(opts.dockerfile, planOpts);
  }
}

/**
 * What each COPY/ADD (and bind mount) takes from the context: matched paths and a content key.
 * A key is left undefined when computing it would mean reading much of the context that the
 * stat cache does not know (a cold build): the step then hashes while it copies (one read of
 * each file instead of two) and looks its key up afterwards.
 */
interface ContextKeys {
  copies: Map<PlanStep, { matches: Map<number, string[]>; key: string | undefined }>;
  binds: Map<PlanStep, string>;
}

/** Unhashed bytes above which a COPY from the context hashes while copying. */
const HASH_ON_COPY_BYTES = 32 << 20;

function hashContext(plan: BuildPlan, context: () => FileSource, reporter: Reporter, fileName: string): ContextKeys {
  const keys: ContextKeys = { copies: new Map(), binds: new Map() };
  const copies: [PlannedStage, CopyStep][] = [];
  const runs: [PlannedStage, RunStep][] = [];
  for (const stage of plan.stages) {
    for (const step of stage.steps) {
      if (step.kind === 'copy' && step.from.kind === 'context' && step.sources.some((s) => s.kind === 'path')) copies.push([stage, step]);
      if (step.kind === 'run' && step.mounts.some((m) => m.type === 'bind' && m.from.kind === 'context')) runs.push([stage, step]);
    }
  }
  if (copies.length === 0 && runs.length === 0) return keys;
  const v = reporter.vertex('[internal] load build context');
  const t0 = nowMs();
  try {
    const src = context();
    for (const [, step] of copies) {
      const where = `${fileName}:${step.line}`;
      const matches = resolveCopySources(src, step, { where, name: shortInstruction(step.original) }, true);
      let unhashed = 0;
      for (const list of matches.values()) for (const m of list) unhashed += src.unhashedBytes(src.follow(m), HASH_ON_COPY_BYTES);
      const deferred = unhashed > HASH_ON_COPY_BYTES && step.sources.every((s) => s.kind === 'path');
      keys.copies.set(step, { matches, key: deferred ? undefined : copySourcesHash(src, step, matches) });
    }
    for (const [, step] of runs) {
      const parts: string[] = [];
      for (const m of step.mounts) {
        if (m.type !== 'bind' || m.from.kind !== 'context') continue;
        const rel = src.follow(normalizeSource(m.source));
        parts.push(m.target, src.treeHash(rel));
      }
      keys.binds.set(step, cacheKey(...parts));
    }
    const secs = ((nowMs() - t0) / 1000).toFixed(1);
    const later = [...keys.copies.values()].filter((c) => c.key === undefined).length;
    v.status(`transferring context: ${formatSize(src.bytesHashed)} read, ${src.filesHashed} file(s) hashed${later > 0 ? `, ${later} COPY step(s) hash while copying` : ''} ${secs}s done`);
    v.done();
  } catch (err) {
    v.fail(errText(err));
    throw err;
  }
  return keys;
}

async function runStage(
  x: ExecContext,
  stage: PlannedStage,
  multiStage: boolean,
  bases: Map<string, BaseImage>,
  stageResult: (index: number) => Promise<StageState>,
  contextKeys: ContextKeys,
  cache: BuildCache,
  reporter: Reporter,
  counts: { run: number; cached: number },
): Promise<StageState> {
  const fsSteps = stage.steps.filter((s) => s.kind === 'run' || s.kind === 'copy' || s.kind === 'workdir').length;
  const total = fsSteps + (stage.base.kind === 'image' ? 1 : 0);
  const width = String(total).length;
  let index = 0;
  const prefix = (): string => {
    index++;
    return `[${multiStage ? `${stage.name ?? `stage-${stage.index}`} ` : ''}${String(index).padStart(width)}/${total}] `;
  };

  let state: StageState;
  if (stage.base.kind === 'image') {
    const base = bases.get(imageKey(stage.base.ref, stage.base.platform))!;
    const v = reporter.vertex(`${prefix()}FROM ${displayRef(stage.base.ref)}@${base.manifest.digest}`);
    if (base.pulled) v.done();
    else v.cached();
    state = { layers: [...base.layers], key: cacheKey('image', base.manifest.digest), history: (base.config.history ?? []).map((h) => ({ ...h })) };
  } else if (stage.base.kind === 'scratch') {
    state = { layers: [], key: cacheKey('scratch', formatPlatform(stage.platform)), history: [] };
  } else {
    const b = await stageResult(stage.base.index);
    state = { layers: [...b.layers], key: b.key, history: b.history.map((h) => ({ ...h })) };
  }

  for (const step of stage.steps) {
    x.opts.signal?.throwIfAborted();
    if (step.kind === 'config' || (step.kind === 'workdir' && step.path === '/')) {
      if (step.history) state.history.push({ created_by: step.history.created_by, comment: step.history.comment, empty_layer: true });
      continue;
    }
    const name = `${prefix()}${step.onbuild ? 'ONBUILD ' : ''}${shortInstruction(step.original, 200)}`;
    const where = `${x.fileName}:${step.line}`;
    const vertex = reporter.vertex(name);
    try {
      const pending = step.kind === 'copy' ? contextKeys.copies.get(step) : undefined;
      if (step.kind === 'copy' && pending && pending.key === undefined) {
        // a cold context: copy while hashing, then look the result up by its key
        x.missed();
        const src = x.context();
        src.hashOnCopy = true;
        let layer: LayerRef;
        const reuse = copyReuse(x, step, state.key);
        try {
          layer = await execCopy(x, step, state.layers, { where, name, vertex }, pending.matches, reuse);
        } finally {
          src.hashOnCopy = false;
        }
        await rememberCopy(x, step, state.key, state.layers, layer, reuse);
        pending.key = copySourcesHash(src, step, pending.matches);
        const key = cacheKey(state.key, step.cacheKey, pending.key);
        let rec = x.opts.noCache ? undefined : await cache.get(key);
        if (rec) layer = { diffId: rec.layer.diffId, desc: { mediaType: rec.layer.mediaType, digest: rec.layer.digest, size: rec.layer.size } };
        else rec = await cache.put(key, [...state.layers, layer], isoTime(), { os: stage.image.os, architecture: stage.image.architecture });
        vertex.done();
        counts.run++;
        state.layers.push(layer);
        state.key = key;
        if (step.history) state.history.push({ created: rec.created, created_by: step.history.created_by, comment: step.history.comment });
        continue;
      }
      const extra = await stepInputs(x, step, contextKeys);
      const key = cacheKey(state.key, step.cacheKey, extra);
      let rec = x.opts.noCache ? undefined : await cache.get(key);
      let layer: LayerRef;
      if (rec) {
        layer = { diffId: rec.layer.diffId, desc: { mediaType: rec.layer.mediaType, digest: rec.layer.digest, size: rec.layer.size } };
        vertex.cached();
        counts.cached++;
      } else {
        x.missed();
        const info = { where, name, vertex };
        if (step.kind === 'run') layer = await execRun(x, step, state.layers, info);
        else if (step.kind === 'copy') {
          const reuse = copyReuse(x, step, state.key);
          layer = await execCopy(x, step, state.layers, info, contextKeys.copies.get(step)?.matches, reuse);
          await rememberCopy(x, step, state.key, state.layers, layer, reuse);
        }
        else layer = await execWorkdir(x, step, state.layers);
        rec = await cache.put(key, [...state.layers, layer], isoTime(), { os: stage.image.os, architecture: stage.image.architecture });
        vertex.done();
        counts.run++;
      }
      releaseDownloads(x, step);
      state.layers.push(layer);
      state.key = key;
      if (step.history) state.history.push({ created: rec.created, created_by: step.history.created_by, comment: step.history.comment });
    } catch (err) {
      releaseDownloads(x, step);
      if (x.opts.signal?.aborted) {
        vertex.canceled();
        throw x.opts.signal.reason;
      }
      const located = locate(err, step, where, name);
      vertex.fail(located instanceof BuildStepError ? located.detail : errText(located));
      throw located;
    }
  }
  return state;
}

/**
 * A COPY that may reuse its last run's files (see copyMayReuse; not with `--no-cache`): its
 * donor — the files that run placed, for those that did not change to be linked instead of
 * copied — and a record to fill.
 */
function copyReuse(x: ExecContext, step: CopyStep, parentKey: string): CopyReuse | undefined {
  if (!copyMayReuse(step) || x.opts.noCache) return undefined;
  return {
    donor: () =>
      loadDonor(x.store.paths, copySlot(parentKey, step), (chain) => {
        const dir = x.snapshots.sn.dir(chain);
        return existsSync(dir) ? dir : undefined;
      }),
  };
}

/** The slot of a COPY: its cache key without the content of what it copies. */
function copySlot(parentKey: string, step: CopyStep): string {
  return cacheKey('copy-slot', parentKey, step.cacheKey);
}

async function rememberCopy(x: ExecContext, step: CopyStep, parentKey: string, parent: LayerRef[], layer: LayerRef, reuse: CopyReuse | undefined): Promise<void> {
  if (!reuse?.placed) return; // nothing placed that a next run could link
  const chain = chainId([...parent.map((l) => l.diffId), layer.diffId])!;
  await saveDonor(x.store.paths, copySlot(parentKey, step), chain, reuse.placed);
}

/** The part of a step's cache key that comes from outside the Dockerfile: source contents. */
async function stepInputs(x: ExecContext, step: PlanStep, contextKeys: ContextKeys): Promise<string> {
  if (step.kind === 'copy') {
    const urls: string[] = [];
    for (const [i, item] of step.sources.entries()) {
      if (item.kind !== 'url') continue;
      let files = x.downloads.get(step);
      if (!files) x.downloads.set(step, (files = new Map()));
      const d = await download(item.url, item.filename, x.store.paths.tmp, step.checksum, x.opts.signal, x.opts.httpsContext);
      files.set(i, d);
      urls.push(`${i}:${d.digest}`);
    }
    if (urls.length > 0) return cacheKey(contextKeys.copies.get(step)?.key ?? '', ...urls);
    if (step.from.kind === 'context') return contextKeys.copies.get(step)?.key ?? 'inline';
    if (step.from.kind === 'stage') return `stage:${chainOf(await x.stageLayers(step.from.index))}`;
    if (step.from.kind === 'image') return `image:${chainOf(x.imageLayers(step.from.ref, step.from.platform))}`;
    return 'scratch';
  }
  if (step.kind === 'run') {
    const parts: string[] = [contextKeys.binds.get(step) ?? ''];
    for (const m of step.mounts) {
      if (m.type !== 'bind') continue;
      if (m.from.kind === 'stage') parts.push(`stage:${chainOf(await x.stageLayers(m.from.index))}`);
      else if (m.from.kind === 'image') parts.push(`image:${chainOf(x.imageLayers(m.from.ref, m.from.platform))}`);
    }
    return cacheKey(...parts);
  }
  return '';
}

function releaseDownloads(x: ExecContext, step: PlanStep): void {
  if (step.kind !== 'copy') return;
  for (const d of x.downloads.get(step)?.values() ?? []) rmSync(d.dir, { recursive: true, force: true });
  x.downloads.delete(step);
}

function chainOf(layers: LayerRef[]): string {
  return chainId(layers.map((l) => l.diffId)) ?? 'empty';
}

/** Any failure of a step becomes a located BuildStepError. */
function locate(err: unknown, step: PlanStep, where: string, name: string): unknown {
  if (err instanceof BuildStepError) return err;
  if (err instanceof MyBuildError) {
    if (err.where !== undefined && err.where.startsWith('Dockerfile')) return err;
    return new BuildStepError(err.code, `${shortInstruction(step.original)}: ${err.message}`, { where, step: name, detail: err.message, ...(err.hint ? { hint: err.hint } : {}), cause: err });
  }
  if (err instanceof Error && err.name === 'AbortError') return err;
  return new BuildStepError('INTERNAL', `${shortInstruction(step.original)}: ${errText(err)}`, { where, step: name, detail: errText(err), cause: err });
}

function imageKey(ref: string, platform: PlatformSpec): string {
  return `${ref}\u0000${formatPlatform(platform)}`;
}

/** `docker.io/library/busybox:latest`, as BuildKit names images in progress. */
function displayRef(ref: string): string {
  try {
    return formatReference(withDefaultTag(parseNormalizedReference(ref)));
  } catch {
    return ref;
  }
}

function errText(err: unknown): string {
  if (err instanceof MyBuildError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

function sha256(s: string): string {
  return createHash('sha256').update(s).digest('hex');
}

function formatSize(n: number): string {
  if (n < 1000) return `${n}B`;
  if (n < 1e6) return `${(n / 1e3).toFixed(2)}kB`;
  if (n < 1e9) return `${(n / 1e6).toFixed(2)}MB`;
  return `${(n / 1e9).toFixed(2)}GB`;
}

/** At most `n` tasks at once. */
function semaphore(n: number): <T>(fn: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: (() => void)[] = [];
  return async <T>(fn: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((r) => waiting.push(r));
    active++;
    try {
      return await fn();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}
