import type { CommandContext } from '../main.js';
import { VERSION } from '../main.js';
import { parseCommand } from '../args.js';

export async function run(ctx: CommandContext): Promise<number> {
  const { values } = parseCommand('version', ctx.args, { format: { type: 'string' } }, 'Usage: mybuild version [--format json]\n');
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  if (values.format === 'json') {
    process.stdout.write(`${JSON.stringify({ Version: VERSION, Node: process.version, Os: process.platform, Arch: arch })}\n`);
  } else {
    process.stdout.write(`mybuild version ${VERSION} (node ${process.version}, ${process.platform}/${arch})\n`);
  }
  return 0;
}
