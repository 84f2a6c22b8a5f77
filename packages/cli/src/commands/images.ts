import { type Reference, parseReference, familiarName, type Digest, shortId } from '@mybuild/oci';
import type { CommandContext } from '../main.js';
import { parseCommand } from '../args.js';
import { open } from '../store.js';
import { formatBytes, timeAgo } from '../progress.js';

const HELP = `Usage: mybuild images [--format table|json] [-q] [REPOSITORY[:TAG]]

List images in the local store.

  --format json   one JSON object per line
  -q, --quiet     only image IDs
`;

interface Row {
  Repository: string;
  Tag: string;
  ID: string;
  Digest: Digest;
  CreatedAt: string;
  CreatedSince: string;
  Size: string;
  SizeBytes: number;
}

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('images', ctx.args, {
    format: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
  }, HELP);
  const store = await open(ctx.global);
  const filter = positionals[0] !== undefined ? parseReference(positionals[0]) : undefined;
  const rows: Row[] = [];
  for (const rec of await store.images.list()) {
    let ref: Reference | undefined;
    if (rec.name) {
      ref = parseReference(rec.name);
      if (filter && (ref.domain !== filter.domain || ref.path !== filter.path || (filter.tag !== undefined && filter.tag !== ref.tag))) continue;
    } else if (filter) continue;
    const image = await store.images.resolve(rec.name || rec.target.digest).catch(() => undefined);
    const size = image ? image.manifest.layers.reduce((n, l) => n + l.size, image.configDescriptor.size) : rec.target.size;
    const created = image?.config.created ?? '';
    rows.push({
      Repository: ref ? familiarName(ref) : '<none>',
      Tag: ref?.tag ?? '<none>',
      ID: image ? shortId(image.id) : '<missing>',
      Digest: rec.target.digest,
      CreatedAt: created,
      CreatedSince: timeAgo(created || undefined),
      Size: formatBytes(size),
      SizeBytes: size,
    });
  }
  if (values.quiet) {
    process.stdout.write([...new Set(rows.map((r) => r.ID))].map((id) => `${id}\n`).join(''));
  } else if (values.format === 'json') {
    process.stdout.write(rows.map((r) => `${JSON.stringify(r)}\n`).join(''));
  } else if (values.format === undefined || values.format === 'table') {
    const table = [['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE'], ...rows.map((r) => [r.Repository, r.Tag, r.ID, r.CreatedSince, r.Size])];
    const widths = table[0]!.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
    process.stdout.write(table.map((row) => `${row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('')}\n`).join(''));
  } else {
    throw new Error(`unknown --format ${values.format} (use table or json)`);
  }
  return 0;
}
