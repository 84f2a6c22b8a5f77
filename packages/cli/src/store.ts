import { openStore, defaultRoot, OverlaySnapshotter, type Store } from '@mybuild/layer-store';
import type { GlobalOptions } from './args.js';

/** Open the store named by --root / MYBUILD_ROOT / the default, with its overlay snapshotter. */
export function open(global: GlobalOptions): Promise<Store> {
  return openStore(global.root ?? defaultRoot(), { snapshotter: (paths) => new OverlaySnapshotter(paths) });
}
