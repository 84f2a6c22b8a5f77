import { openStore, defaultRoot, type Store } from '@mybuild/layer-store';
import type { GlobalOptions } from './args.js';

/** Open the store named by --root / MYBUILD_ROOT / the default. */
export function open(global: GlobalOptions): Promise<Store> {
  return openStore(global.root ?? defaultRoot());
}
