import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { open } from '../store.js';

export async function run(ctx: CommandContext): Promise<number> {
  const { positionals } = parseCommand('tag', ctx.args, {}, 'Usage: mybuild tag SOURCE_IMAGE TARGET_IMAGE[:TAG]\n\nCreate a tag TARGET_IMAGE that refers to SOURCE_IMAGE.\n');
  if (positionals.length !== 2) throw usageError('tag', 'needs exactly two arguments', 'tag SOURCE_IMAGE TARGET_IMAGE[:TAG]');
  const [src, dst] = positionals as [string, string];
  const store = await open(ctx.global);
  const img = await store.images.resolve(src);
  await store.images.tag(dst, img.index?.descriptor ?? img.manifestDescriptor);
  return 0;
}
