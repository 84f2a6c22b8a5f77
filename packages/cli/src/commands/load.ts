import { loadArchive, loadArchiveFile } from '@mybuild/layer-store';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { open } from '../store.js';
import { Progress } from '../progress.js';

const HELP = `Usage: mybuild load [-i FILE] [-q]

Load images from a docker-archive or an OCI archive (plain, gzip or zstd),
from FILE or standard input.
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('load', ctx.args, {
    input: { type: 'string', short: 'i' },
    quiet: { type: 'boolean', short: 'q' },
  }, HELP);
  if (positionals.length) throw usageError('load', `unexpected argument ${JSON.stringify(positionals[0])}`, 'load -i FILE');
  const file = values.input ?? '-';
  if (file === '-' && process.stdin.isTTY) throw usageError('load', 'no archive given and standard input is a terminal', 'load -i FILE');
  const store = await open(ctx.global);
  const progress = new Progress(values.quiet ? 'quiet' : ctx.global.progress);
  const onProgress = (e: { member: string; bytes: number }) => progress.done({ id: e.member, action: 'loaded', total: e.bytes });
  const images = file === '-' ? await loadArchive(store, process.stdin, 'stdin', { onProgress }) : await loadArchiveFile(store, file, { onProgress });
  progress.end();
  for (const img of images) {
    process.stdout.write(img.name ? `Loaded image: ${img.name}\n` : `Loaded image ID: ${img.descriptor.digest}\n`);
  }
  return 0;
}
