import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { open } from '../store.js';

const HELP = `Usage: mybuild inspect [--platform OS/ARCH] IMAGE...

Show an image's manifest and config as JSON (an array, one object per image).
IMAGE is a tag, a digest, an image ID or a short ID.
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('inspect', ctx.args, {
    platform: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  if (positionals.length === 0) throw usageError('inspect', 'needs an image', 'inspect IMAGE...');
  const store = await open(ctx.global);
  const out = [];
  for (const ref of positionals) {
    const img = await store.images.resolve(ref, values.platform ? { platform: values.platform } : {});
    out.push({
      Id: img.id,
      Digest: (img.index?.descriptor ?? img.manifestDescriptor).digest,
      RepoTags: img.names,
      MediaType: img.manifestDescriptor.mediaType,
      Size: img.manifest.layers.reduce((n, l) => n + l.size, img.configDescriptor.size),
      Architecture: img.config.architecture,
      Os: img.config.os,
      Created: img.config.created,
      ...(img.index ? { Index: img.index.index } : {}),
      Manifest: img.manifest,
      Config: img.config,
    });
  }
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  return 0;
}
