import { openStore, defaultRoot, storePaths, OverlaySnapshotter, type Store } from '@mybuild/layer-store';
import type { GlobalOptions } from './args.js';

/**
 * Open the store named by --root / MYBUILD_ROOT / the default, with its overlay snapshotter
 * and the build cache as GC roots (the builder is loaded only when prune or du asks). With
 * `dropBuildCache`, a prune first drops the whole build cache (under prune's exclusive lock,
 * where no build runs) and roots nothing else (`prune --all`); `dropped` counts the records.
 */
export function open(global: GlobalOptions, dropBuildCache?: { dropped: number }): Promise<Store> {
  const root = global.root ?? defaultRoot();
  return openStore(root, {
    snapshotter: (paths) => new OverlaySnapshotter(paths),
    extraRoots: async () => {
      const builder = await import('@mybuild/builder');
      if (!dropBuildCache) return builder.cacheRoots(storePaths(root));
      dropBuildCache.dropped += builder.dropBuildCache(storePaths(root));
      return [];
    },
  });
}
