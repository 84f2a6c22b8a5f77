import type { CommandContext } from '../main.js';
import { parseCommand } from '../args.js';
import { open } from '../store.js';
import { formatBytes } from '../progress.js';

const HELP = `Usage: mybuild prune [-f] [--format json]

Remove blobs, unpacked snapshots and build cache that no tagged image needs,
and abandoned in-progress downloads (ingests).
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values } = parseCommand('prune', ctx.args, {
    force: { type: 'boolean', short: 'f' },
    all: { type: 'boolean', short: 'a' },
    format: { type: 'string' },
  }, HELP);
  const store = await open(ctx.global);
  const r = await store.prune();
  if (values.format === 'json') process.stdout.write(`${JSON.stringify(r)}\n`);
  else process.stdout.write(`Deleted ${r.blobsRemoved} blobs, ${r.snapshotsRemoved} snapshots, ${r.ingestsRemoved} ingests\nTotal reclaimed space: ${formatBytes(r.bytesFreed)}\n`);
  return 0;
}
