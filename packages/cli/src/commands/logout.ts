import { configKeyFor, removeCredentials } from '@mybuild/registry-client';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { registryHost } from '../registry.js';

const HELP = `Usage: mybuild logout [REGISTRY]

Remove the credentials stored for a registry (Docker Hub when REGISTRY is omitted) from
config.json or its credential helper.
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { positionals } = parseCommand('logout', ctx.args, {}, HELP);
  if (positionals.length > 1) throw usageError('logout', 'takes at most one registry', 'logout [REGISTRY]');
  const host = registryHost(positionals[0]);
  const key = configKeyFor(host);
  if (await removeCredentials(host)) process.stdout.write(`Removing login credentials for ${key}\n`);
  else process.stdout.write(`Not logged in to ${key}\n`);
  return 0;
}
