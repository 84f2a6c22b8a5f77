import type { CommandContext } from '../main.js';
import { parseCommand } from '../args.js';
import { open } from '../store.js';
import { formatBytes } from '../progress.js';

const HELP = `Usage: mybuild prune [-a] [-f] [--format json]

Remove blobs, unpacked snapshots and abandoned in-progress downloads (ingests) that no
tagged image and no build cache record needs.

Options:
  -a, --all         also remove the whole build cache (step results, compressed layers,
                    context stat caches, RUN --mount=type=cache directories), and what only
                    it kept: the next build runs every step again
  -f, --force       accepted for docker compatibility (prune never asks)
      --format json one JSON object with the counts
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values } = parseCommand('prune', ctx.args, {
    force: { type: 'boolean', short: 'f' },
    all: { type: 'boolean', short: 'a' },
    format: { type: 'string' },
  }, HELP);
  const dropped = values.all ? { dropped: 0 } : undefined;
  const store = await open(ctx.global, dropped);
  const r = await store.prune();
  if (values.format === 'json') process.stdout.write(`${JSON.stringify(dropped ? { ...r, buildCacheRecordsRemoved: dropped.dropped } : r)}\n`);
  else {
    const cache = dropped ? `, ${dropped.dropped} build cache records` : '';
    process.stdout.write(`Deleted ${r.blobsRemoved} blobs, ${r.snapshotsRemoved} snapshots, ${r.ingestsRemoved} ingests${cache}\nTotal reclaimed space: ${formatBytes(r.bytesFreed)}\n`);
  }
  return 0;
}
