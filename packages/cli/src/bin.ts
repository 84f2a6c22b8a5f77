import { takeDeferredCa } from './extraca.js';
import { main } from './main.js';

takeDeferredCa();

process.on('SIGPIPE', () => process.exit(0));
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
});
main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`mybuild: internal error: ${String((err as Error)?.stack ?? err)}\n`);
    process.exitCode = 70;
  },
);
