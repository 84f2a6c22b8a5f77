import { parseNormalizedReference, parsePlatform } from '@mybuild/oci';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { progressMode, registryClient, TransferProgress } from '../registry.js';

const HELP = `Usage: mybuild copy [--platform OS/ARCH[/VARIANT]] [-q] SOURCE DESTINATION

Copy an image from one registry reference to another (NAME[:TAG|@DIGEST] → NAME[:TAG]).
Blobs stream from registry to registry and are never stored locally; on one registry they
are mounted, not copied. A multi-platform image is copied whole (its index keeps its digest)
unless --platform picks one platform's manifest.

  --platform P           copy only this platform's manifest of a multi-platform image
  -q, --quiet            print only the digest line
  --progress MODE        auto | plain | tty | rawjson | quiet (per-blob events on stderr)
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('copy', ctx.args, {
    platform: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
  }, HELP);
  if (positionals.length !== 2) throw usageError('copy', 'needs a source and a destination', 'copy SOURCE DESTINATION');
  const src = parseNormalizedReference(positionals[0]!);
  const dst = parseNormalizedReference(positionals[1]!);
  const platform = values.platform !== undefined ? parsePlatform(values.platform) : undefined;
  const client = registryClient(ctx.global);
  const progress = new TransferProgress(progressMode(ctx.global, values), 'push', src.domain === dst.domain && src.path !== dst.path ? { mountFrom: src.path } : {});
  let digest: string;
  let size: number;
  try {
    ({ digest, size } = await client.copy(src, dst, { ...(platform ? { platform } : {}), onProgress: progress.onProgress }));
  } finally {
    progress.end();
    client.close();
  }
  process.stdout.write(`${dst.tag ?? dst.digest ?? 'latest'}: digest: ${digest} size: ${size}\n`);
  return 0;
}
