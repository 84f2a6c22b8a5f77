import { mkdir, readdir } from 'node:fs/promises';
import { unpackImage } from '@mybuild/layer-store';
import { MyBuildError } from '@mybuild/oci';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { open } from '../store.js';
import { Progress } from '../progress.js';

const HELP = `Usage: mybuild unpack [--platform OS/ARCH] IMAGE DIR

Unpack the image's root filesystem into DIR (created when missing; must be empty),
as 'umoci raw unpack' does: every layer in order, whiteouts applied, owners, modes,
xattrs, hardlinks and device nodes kept (as root). Hostile layers cannot write outside DIR.
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('unpack', ctx.args, { platform: { type: 'string' } }, HELP);
  if (positionals.length !== 2) throw usageError('unpack', 'needs an image and a directory', 'unpack IMAGE DIR');
  const [ref, dir] = positionals as [string, string];
  const store = await open(ctx.global);
  const img = await store.images.resolve(ref, values.platform ? { platform: values.platform } : {});
  await mkdir(dir, { recursive: true });
  if ((await readdir(dir)).length > 0) {
    throw new MyBuildError('FAILED_PRECONDITION', `directory ${dir} is not empty`, { hint: 'unpack into a new or empty directory' });
  }
  const progress = new Progress(ctx.global.progress);
  const total = img.manifest.layers.length;
  // Under a lease, as save: a concurrent prune waits.
  await store.withImportLease(() =>
    unpackImage(img.manifest.layers, store.content, dir, {
      diffIds: img.config.rootfs.diff_ids,
      onLayer: (i, desc) => progress.done({ id: desc.digest, action: `unpacked layer ${i + 1}/${total}`, total: desc.size }),
    }),
  );
  progress.end();
  return 0;
}
