import type { CommandContext } from '../main.js';
import { parseCommand } from '../args.js';
import { open } from '../store.js';
import { formatBytes } from '../progress.js';

const HELP = `Usage: mybuild du [--format json]

Show the store's disk usage: blobs, unpacked snapshots, build cache and ingests,
and per image the bytes it shares with other images and the bytes only it uses.
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values } = parseCommand('du', ctx.args, { format: { type: 'string' } }, HELP);
  const store = await open(ctx.global);
  const u = await store.du();
  if (values.format === 'json') {
    process.stdout.write(`${JSON.stringify(u)}\n`);
    return 0;
  }
  const table = (rows: string[][]) => {
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    return rows.map((r) => `${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('')}\n`).join('');
  };
  process.stdout.write(
    table([
      ['TYPE', 'COUNT', 'SIZE', 'RECLAIMABLE'],
      ['Blobs', String(u.blobs.count), formatBytes(u.blobs.bytes), `${formatBytes(u.blobs.reclaimableBytes)} (${u.blobs.reclaimableCount})`],
      ['Snapshots', String(u.snapshots.count), formatBytes(u.snapshots.bytes), ''],
      ['Build cache', String(u.cache.entries), formatBytes(u.cache.bytes), ''],
      ['Ingests', String(u.ingest.count), formatBytes(u.ingest.bytes), formatBytes(u.ingest.bytes)],
    ]),
  );
  process.stdout.write(`\nTotal: ${formatBytes(u.totalBytes)}\n\nImages:\n`);
  process.stdout.write(
    table([
      ['REPOSITORY:TAG', 'IMAGE ID', 'SIZE', 'SHARED', 'UNIQUE'],
      ...u.images.map((i) => [i.name || '<none>', i.id ? i.id.slice(7, 19) : '-', formatBytes(i.sizeBytes), formatBytes(i.sharedBytes), formatBytes(i.uniqueBytes)]),
    ]),
  );
  return 0;
}
