/**
 * The executor: runs a build plan — RUN steps in the runc sandbox on overlay snapshots,
 * COPY/ADD through the file-copy rules of BuildKit, a build cache in the store — and stores
 * the image. See build.ts.
 */
export { build } from './build.js';
export type { BuildEvent, BuildOptions, BuildResult, LayerRef, SecretSource } from './types.js';
export { BuildStepError } from './errors.js';
export { cacheRoots, cacheKey, dropBuildCache, BuildCache, type CacheRecord } from './cache.js';
export { StatCache } from './statCache.js';
export { goMatch } from './gomatch.js';
export { createProgressPrinter, type ProgressPrinter, type ProgressUiMode } from './progressui.js';
export { exportImage, parseOutput, pushableManifest, type ExportInput, type ExportResult, type OutputSpec, type OutputType } from './export.js';
