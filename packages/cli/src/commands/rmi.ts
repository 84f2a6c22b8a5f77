import { MyBuildError, formatReference, parseNormalizedReference } from '@mybuild/oci';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { open } from '../store.js';

const HELP = `Usage: mybuild rmi [-f] IMAGE...

Remove image tags. An image named by ID loses all its tags (with -f when it has several).
Blobs no tag needs any more are removed by 'mybuild prune'.
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('rmi', ctx.args, { force: { type: 'boolean', short: 'f' } }, HELP);
  if (positionals.length === 0) throw usageError('rmi', 'needs at least one image', 'rmi IMAGE...');
  const store = await open(ctx.global);
  let failed = 0;
  for (const ref of positionals) {
    try {
      const img = await store.images.resolve(ref);
      const target = img.index?.descriptor ?? img.manifestDescriptor;
      const byId = img.names.length === 0 || !img.names.some((n) => sameName(n, ref));
      const names = byId ? img.names : img.names.filter((n) => sameName(n, ref));
      if (byId && names.length > 1 && !values.force) {
        throw new MyBuildError('FAILED_PRECONDITION', `image ${ref} is referenced by several tags (${names.join(', ')})`, { hint: 'name a tag, or use -f to remove them all' });
      }
      for (const n of names) {
        await store.images.untag(n);
        process.stdout.write(`Untagged: ${n}\n`);
      }
      if (names.length === 0) {
        await store.images.remove(target);
        process.stdout.write(`Deleted: ${target.digest}\n`);
      }
    } catch (err) {
      if (positionals.length === 1) throw err;
      failed++;
      process.stderr.write(`mybuild: error: ${err instanceof MyBuildError ? err.oneLine() : (err as Error).message}\n`);
    }
  }
  return failed ? 1 : 0;
}

function normal(name: string): string | undefined {
  try {
    return formatReference(parseNormalizedReference(name));
  } catch {
    return undefined;
  }
}

function sameName(stored: string, asked: string): boolean {
  const a = normal(asked);
  return a !== undefined && normal(stored) === a;
}
