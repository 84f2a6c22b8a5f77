import { openStore, defaultRoot, storePaths, OverlaySnapshotter, type Store } from '@mybuild/layer-store';
import type { GlobalOptions } from './args.js';

/**
 * Open the store named by --root / MYBUILD_ROOT / the default, with its overlay snapshotter
 * and the build cache as GC roots (the builder is loaded only when prune or du asks).
 */
export function open(global: GlobalOptions): Promise<Store> {
  const root = global.root ?? defaultRoot();
  return openStore(root, {
    snapshotter: (paths) => new OverlaySnapshotter(paths),
    extraRoots: async () => (await import('@mybuild/builder')).cacheRoots(storePaths(root)),
  });
}
