import { saveArchiveFile, type ArchiveFormat } from '@mybuild/layer-store';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { open } from '../store.js';
import { Progress } from '../progress.js';

const HELP = `Usage: mybuild save [-o FILE] [--format docker|oci] IMAGE...

Save images to a tar archive (standard output when no -o and it is not a terminal).

  -o, --output FILE   write to FILE (atomically: nothing is left behind on failure)
  --format docker     docker-archive, loadable by 'docker load' and 'podman load' (default)
  --format oci        OCI image layout archive (oci-archive)
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('save', ctx.args, {
    output: { type: 'string', short: 'o' },
    format: { type: 'string' },
  }, HELP);
  if (positionals.length === 0) throw usageError('save', 'needs at least one image', 'save [-o FILE] IMAGE...');
  const format = (values.format ?? 'docker') as ArchiveFormat;
  if (format !== 'docker' && format !== 'oci') throw usageError('save', `unknown --format ${JSON.stringify(values.format)}`, 'save --format docker|oci ...');
  const file = values.output ?? '-';
  if (file === '-' && process.stdout.isTTY) {
    throw usageError('save', 'refusing to write an archive to a terminal', 'save -o FILE IMAGE... (or redirect stdout)');
  }
  const store = await open(ctx.global);
  const progress = new Progress(file === '-' && ctx.global.progress === 'auto' ? 'quiet' : ctx.global.progress);
  // Under a lease: a concurrent prune waits (a built layer is read from its snapshot, which
  // prune could otherwise remove under the reader once the image is untagged).
  await store.withImportLease(() =>
    saveArchiveFile(store, positionals, file, {
      format,
      onProgress: (e) => progress.done({ id: e.digest, action: 'saved', total: e.bytes }),
    }),
  );
  progress.end();
  return 0;
}
