/**
 * The filesystem steps of a stage — RUN, COPY/ADD, WORKDIR — each making one layer on top of
 * its parent's chain (see Snapshots.layer).
 */
import { chmodSync, lchownSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errnoCode, MyBuildError, randomBytes } from '@mybuild/oci';
import { acquireLock, type Lock, type Store } from '@mybuild/layer-store';
import { IgnoreMatcher } from '../frontend/dockerignore.js';
import { goClean } from '../frontend/gopath.js';
import type { CopyStep, FileSource as PlanFileSource, RunMount, RunStep, WorkdirStep } from '../frontend/plan-types.js';
import type { PlatformSpec } from '../frontend/platform.js';
import { rootPath } from '../sandbox/rootPath.js';
import { type SandboxMount, isSandboxExit, runInSandbox } from '../sandbox/runInSandbox.js';
import { type Download, isArchive, unpackToTemp } from './addSources.js';
import { cacheKey } from './cache.js';
import { resolveOwner } from './chown.js';
import { BuildStepError, shortInstruction } from './errors.js';
import { type Donor, type PlacedFiles, encodePlaced } from './donor.js';
import { Copier } from './fscopy.js';
import { hasWildcards } from './gomatch.js';
import type { Vertex } from './reporter.js';
import type { Mounted, Snapshots } from './snapshots.js';
import { FileSource } from './source.js';
import type { BuildOptions, LayerRef } from './types.js';

/** What the steps need of the build around them. */
export interface ExecContext {
  opts: BuildOptions;
  store: Store;
  snapshots: Snapshots;
  fileName: string;
  /** The sandbox's state dir (tmpfs for root): secrets and inline files go there. */
  stateDir: string;
  /** The build context, `.dockerignore` applied. */
  context(): FileSource;
  /** The final layers of a stage (waits for it). */
  stageLayers(index: number): Promise<LayerRef[]>;
  /** The layers of a resolved image. */
  imageLayers(ref: string, platform: PlatformSpec): LayerRef[];
  /** ADD URL sources downloaded while computing cache keys: step → source index → file. */
  downloads: Map<CopyStep, Map<number, Download>>;
  /** A step is about to run (it missed the cache). */
  missed(): void;
}

/** Which step, for errors and progress. */
export interface StepInfo {
  where: string;
  name: string;
  vertex: Vertex;
}

/** A COPY source path as BuildKit normalises it: relative to the source root, cleaned, `..` stopping at the root. */
export function normalizeSource(path: string): string {
  return goClean(`/${path}`).slice(1);
}

/**
 * `COPY --parents` splits a source at its pivot `/./` (none: the root): the directory copied
 * from, and the pattern (with wildcards) its paths must match to be copied — with their
 * parent directories, as in the source.
 */
export function parentsSource(path: string): { pivot: string; pattern: string } {
  const cut = path.indexOf('/./');
  if (cut < 0) return { pivot: '', pattern: normalizeSource(path) };
  return { pivot: normalizeSource(path.slice(0, cut)), pattern: normalizeSource(path.slice(cut + 3)) };
}

// ---------------------------------------------------------------- RUN

export async function execRun(x: ExecContext, step: RunStep, parent: LayerRef[], info: StepInfo): Promise<LayerRef> {
  if (step.security === 'insecure') {
    throw stepError(step, info, 'UNSUPPORTED', 'RUN --security=insecure is not supported', 'mybuild runs every step with the default sandbox');
  }
  const network = step.network === 'default' ? (x.opts.network ?? 'host') : step.network;
  const release: (() => Promise<void>)[] = [];
  const mounts: SandboxMount[] = [];
  const env = [...step.env, ...step.proxyEnv];
  const privateDir = join(x.stateDir, 'steps', randomBytes(8).toString('hex'));
  mkdirSync(privateDir, { recursive: true, mode: 0o700 });
  release.push(async () => rmSync(privateDir, { recursive: true, force: true }));
  try {
    for (const m of step.mounts) await addMount(x, step, info, m, mounts, env, privateDir, release);
    for (const f of step.inlineFiles) {
      const file = join(privateDir, `inline-${randomBytes(6).toString('hex')}`);
      writeFileSync(file, f.data, { mode: f.mode });
      chmodSync(file, f.mode);
      mounts.push({ type: 'bind', source: file, target: f.path, readonly: true });
    }
    return await x.snapshots.layer(parent, async (rootfsMounts) => {
      try {
        await runInSandbox({
          rootfsMounts,
          args: step.args,
          env,
          cwd: step.workdir,
          user: step.user,
          network,
          mounts,
          runTmpfs: false,
          stdout: info.vertex.output('stdout'),
          stderr: info.vertex.output('stderr'),
          ...(x.opts.signal ? { signal: x.opts.signal } : {}),
          ...(x.opts.sandbox?.stateDir ? { stateDir: x.opts.sandbox.stateDir } : {}),
          ...(x.opts.sandbox?.runtime ? { runtime: x.opts.sandbox.runtime } : {}),
        });
      } catch (err) {
        if (isSandboxExit(err)) {
          throw new BuildStepError('FAILED_PRECONDITION', `${shortInstruction(step.original)}: ${err.message}`, {
            where: info.where,
            step: info.name,
            detail: err.message,
            lastLines: err.lastLines,
            exitCode: err.exitCode,
            cause: err,
          });
        }
        if (err instanceof MyBuildError && !(err instanceof BuildStepError)) {
          throw new BuildStepError(err.code, `${shortInstruction(step.original)}: ${err.message}`, {
            where: info.where,
            step: info.name,
            detail: err.message,
            ...(err.hint ? { hint: err.hint } : {}),
            cause: err,
          });
        }
        throw err;
      }
    });
  } finally {
    for (const r of release.reverse()) await r().catch(() => {});
  }
}

async function addMount(
  x: ExecContext,
  step: RunStep,
  info: StepInfo,
  m: RunMount,
  mounts: SandboxMount[],
  env: string[],
  privateDir: string,
  release: (() => Promise<void>)[],
): Promise<void> {
  switch (m.type) {
    case 'tmpfs':
      mounts.push({ type: 'tmpfs', target: m.target, ...(m.tmpfs?.size ? { size: m.tmpfs.size } : {}) });
      return;
    case 'secret': {
      const s = m.secret!;
      const src = x.opts.secrets?.[s.id];
      if (!src) {
        if (s.required) throw stepError(step, info, 'NOT_FOUND', `secret ${s.id} not found`, `pass it with --secret id=${s.id},src=FILE`);
        return;
      }
      const value = 'value' in src ? src.value : readSecretFile(src.file, s.id, step, info);
      if (s.env !== undefined) env.push(`${s.env}=${value.toString('utf8')}`);
      if (s.target !== undefined) {
        const file = join(privateDir, `secret-${randomBytes(6).toString('hex')}`);
        const mode = m.mode ?? 0o400;
        writeFileSync(file, value, { mode: 0o600 });
        lchownSync(file, m.uid ?? 0, m.gid ?? 0);
        chmodSync(file, mode);
        mounts.push({ type: 'bind', source: file, target: s.target, readonly: true });
      }
      return;
    }
    case 'ssh':
      if (m.ssh?.required) throw stepError(step, info, 'UNSUPPORTED', 'RUN --mount=type=ssh is not supported', 'mybuild has no SSH agent forwarding; use a secret mount');
      return;
    case 'cache': {
      const id = m.cache!.id;
      const dir = join(x.store.paths.cache, 'mounts', cacheKey('cache-mount', id));
      try {
        mkdirSync(dir, { recursive: false, mode: 0o755 });
        chmodSync(dir, m.mode ?? 0o755);
        lchownSync(dir, m.uid ?? 0, m.gid ?? 0);
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') {
          mkdirSync(join(x.store.paths.cache, 'mounts'), { recursive: true, mode: 0o700 });
          mkdirSync(dir, { mode: 0o755 });
          chmodSync(dir, m.mode ?? 0o755);
          lchownSync(dir, m.uid ?? 0, m.gid ?? 0);
        } else if (errnoCode(err) !== 'EEXIST') throw err;
      }
      if (m.cache!.sharing !== 'shared') {
        const lock: Lock = await acquireLock(x.store.paths.locks, `cache-mount-${cacheKey('cache-mount', id)}`);
        release.push(() => lock.release());
      }
      mounts.push({ type: 'bind', source: dir, target: m.target, readonly: m.readOnly });
      return;
    }
    case 'bind': {
      const mounted = await mountSource(x, m.from, m.readOnly, m.source);
      release.push(mounted.release);
      const rel = rootPath(mounted.root, m.source);
      mounts.push({ type: 'bind', source: rel === '' ? mounted.root : join(mounted.root, rel), target: m.target, readonly: m.readOnly });
      return;
    }
  }
}

/**
 * The tree a bind mount shows. The context is materialised (what `.dockerignore` leaves, owned
 * by root, as BuildKit sends it) so that neither excluded files nor writes reach the host.
 */
async function mountSource(x: ExecContext, from: PlanFileSource, readOnly: boolean, source: string): Promise<Mounted> {
  if (from.kind === 'context') {
    const dir = mkdtempSync(join(x.store.paths.tmp, 'bind-'));
    const ctx = x.context();
    const rel = normalizeSource(source);
    if (ctx.lstat(ctx.follow(rel))) new Copier(dir).copy(ctx, rel, rel === '' ? '/' : `/${rel}`);
    return { root: dir, release: async () => rmSync(dir, { recursive: true, force: true }) };
  }
  const layers = from.kind === 'stage' ? await x.stageLayers(from.index) : from.kind === 'image' ? x.imageLayers(from.ref, from.platform) : [];
  return readOnly ? x.snapshots.mountView(layers) : x.snapshots.mountScratch(layers);
}

function readSecretFile(file: string, id: string, step: RunStep, info: StepInfo): Buffer {
  try {
    return readFileSyncCapped(file);
  } catch (err) {
    throw stepError(step, info, 'NOT_FOUND', `secret ${id}: cannot read ${file}: ${(err as Error).message}`);
  }
}

function readFileSyncCapped(file: string): Buffer {
  const b = readFileSync(file);
  if (b.length > 500 * 1024) throw new MyBuildError('SIZE_EXCEEDED', 'secrets are limited to 500 KiB (as in BuildKit)');
  return b;
}

// ---------------------------------------------------------------- COPY / ADD

/** What the hashing phase found for a COPY/ADD from the context: the matches of each source path. */
export interface ContextSources {
  /** per `sources` index of a path item: its matches (root-relative) */
  matches: Map<number, string[]>;
}

/**
 * Resolve the path sources of a COPY/ADD in `src` (wildcards, existence). A path without
 * wildcards must exist; a wildcard may match nothing (BuildKit's AllowEmptyWildcard).
 */
export function resolveCopySources(src: FileSource, step: CopyStep, info: { where: string; name: string }, fromContext: boolean): Map<number, string[]> {
  const out = new Map<number, string[]>();
  step.sources.forEach((item, i) => {
    if (item.kind !== 'path') return;
    if (step.parents) {
      // the pivot directory is what is copied (filtered); a path without wildcards must exist
      const { pivot, pattern } = parentsSource(item.path);
      if (!hasWildcards(pivot) && !hasWildcards(pattern) && src.lstat(src.follow(pattern === '' ? pivot : pivot === '' ? pattern : `${pivot}/${pattern}`)) === undefined) {
        throw new BuildStepError('NOT_FOUND', `${step.instruction}: ${JSON.stringify(item.path)} not found ${fromContext ? 'in the build context' : 'in the source'}`, {
          where: info.where,
          step: info.name,
        });
      }
      out.set(i, src.lstat(src.follow(pivot))?.isDirectory() ? [pivot] : []);
      return;
    }
    const path = normalizeSource(item.path);
    let matches: string[];
    try {
      matches = src.resolveWildcards(path);
    } catch (err) {
      if (err instanceof MyBuildError) throw err;
      throw new BuildStepError('INVALID_ARGUMENT', `${step.instruction} ${item.path}: ${(err as Error).message}`, { where: info.where, step: info.name, cause: err });
    }
    if (!hasWildcards(path)) {
      const exists = src.lstat(src.follow(path)) !== undefined;
      if (!exists) {
        const ignored = fromContext && src.excluded(path);
        const place = fromContext ? 'in the build context' : `in ${step.from.kind === 'stage' ? 'the stage' : 'the image'} it copies from`;
        throw new BuildStepError('NOT_FOUND', `${step.instruction}: ${JSON.stringify(item.path)} not found ${place}`, {
          where: info.where,
          step: info.name,
          hint: ignored ? `it is excluded by .dockerignore` : fromContext ? 'paths are relative to the context directory' : 'check the path in the source stage',
        });
      }
    }
    out.set(i, matches);
  });
  return out;
}

/** The content part of a COPY's cache key for sources in `src`. */
export function copySourcesHash(src: FileSource, step: CopyStep, matches: Map<number, string[]>): string {
  const exclude = step.excludes.length > 0 ? new IgnoreMatcher(step.excludes) : undefined;
  const parts: string[] = [];
  for (const [i, list] of matches) {
    const include = parentsInclude(step, i);
    for (const m of list) parts.push(`${i}:${m}`, src.treeHash(src.follow(m), exclude, include));
  }
  return cacheKey(...parts);
}

/** The include filter of source `i` of a `COPY --parents`. */
function parentsInclude(step: CopyStep, i: number): IgnoreMatcher | undefined {
  const item = step.sources[i];
  if (!step.parents || item?.kind !== 'path') return undefined;
  const { pattern } = parentsSource(item.path);
  return pattern === '' ? undefined : new IgnoreMatcher([pattern]);
}

/**
 * Whether a COPY may link the files of its last run and record what it places: plain paths
 * from the context only (their hashes are known; `--parents` copies with a copier of its own,
 * whose files the record would miss; `--link` layers stand on their own).
 */
export function copyMayReuse(step: CopyStep): boolean {
  return step.from.kind === 'context' && !step.link && !step.unpack && step.sources.every((item, i) => item.kind === 'path' && parentsInclude(step, i) === undefined);
}

/** A COPY that may link the files of its last run (see {@link copyMayReuse}), and records what it placed for the next. */
export interface CopyReuse {
  /** that last run's files (read only when the copy goes straight into its upper directory) */
  donor(): Donor | undefined;
  /** filled by execCopy: each regular file it placed and its content hash (none: nothing to record) */
  placed?: PlacedFiles;
}

export async function execCopy(x: ExecContext, step: CopyStep, parent: LayerRef[], info: StepInfo, contextMatches: Map<number, string[]> | undefined, reuse?: CopyReuse): Promise<LayerRef> {
  for (const item of step.sources) {
    if (item.kind === 'git') throw stepError(step, info, 'UNSUPPORTED', `ADD of a git repository (${item.url}) is not supported`, 'clone it into the context first and COPY it');
  }
  let src: FileSource;
  let release: (() => Promise<void>) | undefined;
  if (step.from.kind === 'context') src = x.context();
  else {
    const layers = step.from.kind === 'stage' ? await x.stageLayers(step.from.index) : step.from.kind === 'image' ? x.imageLayers(step.from.ref, step.from.platform) : [];
    const view = await x.snapshots.mountView(layers);
    release = view.release;
    src = new FileSource(view.root);
  }
  const inlineDir = step.sources.some((s) => s.kind === 'inline') ? mkdtempSync(join(x.store.paths.tmp, 'inline-')) : undefined;
  try {
    const matches = contextMatches ?? resolveCopySources(src, step, info, false);
    const exclude = step.excludes.length > 0 ? new IgnoreMatcher(step.excludes) : undefined;
    const link = step.link && step.chmod === undefined;
    return await x.snapshots.layer(parent, async (mounts, upper) => {
      // Linking from the donor: only into a fresh upper directory written directly (below).
      let reuseHere: CopyReuse | undefined;
      let donor: Donor | undefined;
      const fill = async (root: string, chownRoot: string) => {
        const options = {
          ...(step.chown !== undefined ? { chown: resolveOwner(chownRoot, step.chown) } : {}),
          ...(step.chmod !== undefined ? { chmod: step.chmod } : {}),
          ...(exclude ? { exclude } : {}),
          ...(reuseHere ? { record: true, ...(donor ? { donor } : {}) } : {}),
        };
        const copier = new Copier(root, options);
        try {
          for (const [i, item] of step.sources.entries()) {
            const include = parentsInclude(step, i);
            if (item.kind === 'path' && include) {
              // --parents: the pivot's contents, only what matches, with the directories above
              const withParents = new Copier(root, { ...options, include });
              for (const m of matches.get(i) ?? []) withParents.copy(src, m, step.dest.endsWith('/') ? step.dest : `${step.dest}/`);
            } else if (item.kind === 'path') {
              for (const m of matches.get(i) ?? []) {
                const file = src.follow(m);
                if (step.unpack && src.lstat(file)?.isFile() && (await isArchive(src.host(file)))) await unpackInto(x, copier, src.host(file), root, step.dest);
                else copier.copy(src, m, step.dest);
              }
            } else if (item.kind === 'url') {
              const d = x.downloads.get(step)?.get(i);
              if (!d) throw new MyBuildError('INTERNAL', `${item.url} was not downloaded`);
              if (item.unpack && (await isArchive(join(d.dir, d.name)))) await unpackInto(x, copier, join(d.dir, d.name), root, step.dest);
              else copier.copy(new FileSource(d.dir, { resetOwner: true }), d.name, step.dest);
            } else if (item.kind === 'inline') {
              const name = normalizeSource(item.name);
              const file = join(inlineDir!, name);
              mkdirSync(join(file, '..'), { recursive: true });
              writeFileSync(file, item.data);
              chmodSync(file, 0o644);
              copier.copy(new FileSource(inlineDir!, { resetOwner: true }), name, step.dest);
            }
          }
          if (reuseHere && copier.placed) {
            if (copier.placed.size > 0) reuseHere.placed = encodePlaced(copier.placed);
            if (copier.linked > 0) info.vertex.status(`${copier.linked} unchanged file(s) linked from the previous build of this step`);
          }
        } catch (err) {
          if (err instanceof BuildStepError) throw err;
          const msg = err instanceof Error ? err.message : String(err);
          throw new BuildStepError(err instanceof MyBuildError ? err.code : 'FAILED_PRECONDITION', `${shortInstruction(step.original)}: ${msg}`, {
            where: info.where,
            step: info.name,
            cause: err,
          });
        }
      };
      const chownByName = step.chown !== undefined && !/^[0-9]*(:[0-9]*)?$/.test(step.chown);
      const direct = !link && writesOnlyNew(step.dest, mounts);
      if (direct && reuse) {
        reuseHere = reuse;
        donor = reuse.donor();
      }
      if (link || direct) {
        // --link: the layer is made on its own (no lower directories), as BuildKit's merge op
        // does. A destination no lower layer has anything of (its first component is new): the
        // files go straight into the fresh upper directory, as the overlay would put them there
        // (no copy-up, no whiteout, no symlink below to follow), without the overlay's cost per
        // file (a copy through it took ~1.5× as long) or a mount. Either way a user name for
        // --chown is still looked up in the image below.
        if (chownByName) await x.snapshots.withView(parent, (view) => fill(upper, view));
        else await fill(upper, upper);
      } else {
        await x.snapshots.withMounted(mounts, (root) => fill(root, root));
      }
    });
  } finally {
    if (inlineDir) rmSync(inlineDir, { recursive: true, force: true });
    await release?.();
  }
}

/**
 * Whether a COPY to `dest` only makes entries no lower layer of `mounts` has: the first
 * component of the destination is absent from every lower directory (not even a whiteout). Then
 * nothing the copy writes is above a lower entry, and writing into the upper directory is what
 * the overlay would do. `MYBUILD_COPY_DIRECT=0` always copies through the overlay.
 */
export function writesOnlyNew(dest: string, mounts: readonly { type: string; options: readonly string[] }[]): boolean {
  if (process.env.MYBUILD_COPY_DIRECT === '0') return false;
  const first = goClean(dest).split('/').find((c) => c !== '');
  if (first === undefined || first === '..') return false;
  if (mounts.length !== 1) return false;
  const m = mounts[0]!;
  if (m.type === 'bind') return true; // no lower layers
  const lower = m.options.find((o) => o.startsWith('lowerdir='));
  if (m.type !== 'overlay' || lower === undefined) return false;
  for (const dir of lower.slice('lowerdir='.length).split(':')) {
    try {
      lstatSync(join(dir, first));
      return false;
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') return false;
    }
  }
  return true;
}

/**
 * BuildKit's unpack: the destination (all of it, trailing slash or not) becomes a directory
 * and the archive's tree is merged into it (owners from the archive unless --chown).
 */
async function unpackInto(x: ExecContext, copier: Copier, archive: string, root: string, dest: string): Promise<void> {
  const dir = await unpackToTemp(archive, x.store.paths.tmp);
  try {
    copier.mkdirAll(rootPath(root, goClean(dest)), 0o755, copier.owner);
    copier.copy(new FileSource(dir), '', dest.endsWith('/') ? dest : `${dest}/`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------- WORKDIR

export async function execWorkdir(x: ExecContext, step: WorkdirStep, parent: LayerRef[]): Promise<LayerRef> {
  return x.snapshots.layer(parent, async (mounts) => {
    await x.snapshots.withMounted(mounts, async (root) => {
      const owner = step.user !== '' ? resolveOwner(root, step.user) : undefined;
      new Copier(root).mkdirAll(rootPath(root, step.path), 0o755, owner);
    });
  });
}

function stepError(step: { original: string }, info: { where: string; name: string }, code: MyBuildError['code'], message: string, hint?: string): BuildStepError {
  return new BuildStepError(code, `${shortInstruction(step.original)}: ${message}`, { where: info.where, step: info.name, detail: message, ...(hint ? { hint } : {}) });
}
