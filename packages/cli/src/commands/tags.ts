import { familiarName, MyBuildError, parseReference, repositoryName } from '@mybuild/oci';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { registryClient } from '../registry.js';

const HELP = `Usage: mybuild tags [--format text|json] REPOSITORY

List the tags of a repository in a registry, one per line (registry order).

  --format json   {"Repository": "...", "Tags": [...]} as skopeo list-tags prints it
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('tags', ctx.args, {
    format: { type: 'string' },
  }, HELP);
  if (positionals.length !== 1) throw usageError('tags', positionals.length ? 'takes one repository' : 'needs a repository', 'tags REPOSITORY');
  const format = values.format ?? 'text';
  if (format !== 'text' && format !== 'json') throw usageError('tags', `unknown --format ${JSON.stringify(format)}`, 'tags --format text|json REPOSITORY');
  const repo = parseReference(positionals[0]!);
  if (repo.tag !== undefined || repo.digest !== undefined) {
    throw new MyBuildError('INVALID_ARGUMENT', `tags: ${JSON.stringify(positionals[0])} names a tag or digest, not a repository`, { hint: `use mybuild tags ${familiarName(repo)}` });
  }
  const client = registryClient(ctx.global);
  let tags: string[];
  try {
    tags = await client.listTags(repo);
  } finally {
    client.close();
  }
  if (format === 'json') process.stdout.write(`${JSON.stringify({ Repository: repositoryName(repo), Tags: tags })}\n`);
  else process.stdout.write(tags.map((t) => `${t}\n`).join(''));
  return 0;
}
