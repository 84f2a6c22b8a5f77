import { describe, expect, test } from 'vitest';
import { MyBuildError, isInvalidArgument } from '@mybuild/oci';
import { parseDockerfile, type Instruction } from '@mybuild/builder';
// the node level is internal to the front end; these tests compare it with BuildKit's parser
import { parseDockerfileText, parseHeredoc } from '../src/frontend/parser.js';

const commands = (text: string): Instruction[] => parseDockerfile(text).stages.flatMap((s) => s.commands);
const first = (text: string): Instruction => commands(text)[0]!;

function errorOf(fn: () => unknown): MyBuildError {
  try {
    fn();
  } catch (err) {
    expect(isInvalidArgument(err)).toBe(true);
    return err as MyBuildError;
  }
  throw new Error('expected an error');
}

describe('line scanner', () => {
  test('continuations join lines; comments and empty lines inside are dropped', () => {
    const df = 'FROM a\nRUN echo a \\\n  # comment\n\n  b\nRUN c\n';
    const parsed = parseDockerfile(df);
    const [run1, run2] = parsed.stages[0]!.commands;
    expect(run1).toMatchObject({ kind: 'RUN', cmdLine: ['echo a   b'], line: 2, endLine: 5 });
    expect(run2).toMatchObject({ kind: 'RUN', line: 6, endLine: 6 });
    expect(parsed.parserWarnings).toEqual([expect.objectContaining({ rule: 'NoEmptyContinuation', line: 5 })]);
  });

  test('a continuation at the end of the file ends the instruction', () => {
    expect(first('FROM a\nRUN echo x \\')).toMatchObject({ cmdLine: ['echo x'] });
  });

  test('an escaped escape character does not continue the line', () => {
    expect(commands('FROM a\nRUN echo \\\\\nRUN b\n')).toHaveLength(2);
  });

  test('# escape=` switches the continuation and escape character', () => {
    const parsed = parseDockerfile('# escape=`\nFROM a\nRUN dir c:\\ `\n  /b\n');
    expect(parsed.escapeToken).toBe('`');
    expect(parsed.stages[0]!.commands[0]).toMatchObject({ cmdLine: ['dir c:\\   /b'] });
  });

  test('parser directives count only at the very top', () => {
    const afterComment = parseDockerfile('# hello\n# escape=`\nFROM a\n');
    expect(afterComment.escapeToken).toBe('\\');
    expect(afterComment.directives).toEqual([]);
    const afterBlank = parseDockerfile('\n# escape=`\nFROM a\n');
    expect(afterBlank.escapeToken).toBe('\\');
    const ok = parseDockerfile('# syntax = docker/dockerfile:1\n#ESCAPE=`\nFROM a\n');
    expect(ok.directives.map((d) => [d.name, d.value])).toEqual([
      ['syntax', 'docker/dockerfile:1'],
      ['escape', '`'],
    ]);
    // an unknown directive ends the directive block
    expect(parseDockerfile('# foo=bar\n# escape=`\nFROM a\n').escapeToken).toBe('\\');
  });

  test('a byte order mark and CRLF line endings are accepted', () => {
    const parsed = parseDockerfile('\ufeffFROM a\r\nENV A=1 \\\r\n  B=2\r\n');
    expect(parsed.stages[0]!.from.baseName).toBe('a');
    expect(parsed.stages[0]!.commands[0]).toMatchObject({ kind: 'ENV', pairs: [{ key: 'A', value: '1' }, { key: 'B', value: '2' }] });
  });

  test('instruction words are case-insensitive and keep their spelling', () => {
    expect(first('from a\nrun x\n')).toMatchObject({ kind: 'RUN', keyword: 'run' });
  });
});

describe('exec form detection', () => {
  test.each([
    ['RUN ["echo", "a"]', ['echo', 'a'], false],
    ['RUN   [ "echo" ,"a" ]  ', ['echo', 'a'], false],
    ['RUN []', [], false],
    ["RUN ['echo', 'a']", ["['echo', 'a']"], true],
    ['RUN ["echo", "a"', ['["echo", "a"'], true],
    ['RUN [echo]', ['[echo]'], true],
    ['RUN {"a": "b"}', ['{"a": "b"}'], true],
  ])('%s', (line, cmdLine, shell) => {
    expect(first(`FROM a\n${line}\n`)).toMatchObject({ cmdLine, prependShell: shell });
  });

  test('a JSON array with something other than strings is an error, not shell form', () => {
    const e = errorOf(() => parseDockerfile('FROM a\nENTRYPOINT ["a", null]\n'));
    expect(e.oneLine()).toBe('Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only');
  });
});

describe('heredocs', () => {
  test('body, chomp, quoted delimiter and file descriptor', () => {
    const df = 'FROM a\nCOPY <<-"EOT" 3<<X /d/\n\tliteral $A\n\tEOT\nx\nX\nRUN ok\n';
    const [copy, run] = commands(df);
    expect(copy).toMatchObject({
      kind: 'COPY',
      line: 2,
      endLine: 6,
      sourceContents: [
        { path: 'EOT', data: 'literal $A\n', expand: false },
        { path: 'X', data: 'x\n', expand: true },
      ],
      dest: '/d/',
    });
    expect(run).toMatchObject({ kind: 'RUN', line: 7 });
  });

  test('RUN keeps heredoc bodies for the planner', () => {
    expect(first('FROM a\nRUN <<A <<B\n1\nA\n2\nB\n')).toMatchObject({
      cmdLine: ['<<A <<B'],
      files: [
        { name: 'A', data: '1\n', chomp: false },
        { name: 'B', data: '2\n', chomp: false },
      ],
    });
  });

  test('quoted << and exec form are not heredocs', () => {
    expect(commands('FROM a\nRUN echo "<<EOF"\nRUN ["<<EOF"]\n')).toHaveLength(2);
  });

  test('ONBUILD keeps the heredoc in its trigger text', () => {
    expect(first('FROM a\nONBUILD RUN <<EOF\necho hi\nEOF\n')).toMatchObject({ kind: 'ONBUILD', expression: 'RUN <<EOF\necho hi\nEOF' });
  });
});

describe('flags and arguments', () => {
  test('flag values may be quoted; -- ends the flags', () => {
    expect(first('FROM a\nRUN --mount="type=cache,target=/x y" --network=none echo\n')).toMatchObject({
      mounts: ['type=cache,target=/x y'],
      network: 'none',
      cmdLine: ['echo'],
    });
    expect(first('FROM a\nCOPY --link -- --not-a-flag /d\n')).toMatchObject({ link: true, sourcePaths: ['--not-a-flag'] });
  });

  test('ENV and LABEL keep quotes for the planner; legacy form takes the rest of the line', () => {
    expect(first('FROM a\nENV A="x y" B=z\n')).toMatchObject({ pairs: [{ key: 'A', value: '"x y"', noDelim: false }, { key: 'B', value: 'z' }] });
    expect(first('FROM a\nENV A  x  "y"\n')).toMatchObject({ pairs: [{ key: 'A', value: 'x  "y"', noDelim: true }] });
  });

  test('ARG: several per line, with and without defaults', () => {
    expect(first('FROM a\nARG A B=1 C=\n')).toMatchObject({ args: [{ key: 'A', value: undefined }, { key: 'B', value: '1' }, { key: 'C', value: '' }] });
  });

  test('FROM: platform flag, AS name lower-cased, global ARGs kept apart', () => {
    const parsed = parseDockerfile('ARG X=1\nFROM --platform=$P img:$X As Build\n');
    expect(parsed.metaArgs[0]!.args).toEqual([{ key: 'X', value: '1' }]);
    expect(parsed.stages[0]!.from).toMatchObject({ baseName: 'img:$X', stageName: 'build', platform: '$P' });
  });

  test('EXPOSE arguments are sorted as written', () => {
    expect(first('FROM a\nEXPOSE 8080 443 80/udp\n')).toMatchObject({ ports: ['443', '80/udp', '8080'] });
  });

  test('HEALTHCHECK durations are nanoseconds', () => {
    expect(first('FROM a\nHEALTHCHECK --interval=1m --timeout=250ms --start-period=1.5s --retries=2 CMD ["c"]\n')).toMatchObject({
      health: { test: ['CMD', 'c'], interval: 60e9, timeout: 250e6, startPeriod: 1.5e9, startInterval: 0, retries: 2 },
    });
  });

  test('errors carry the line of the instruction and a hint', () => {
    const e = errorOf(() => parseDockerfile('FROM a\n\nRUN x \\\n  y\nWROKDIR /x\n', { fileName: 'app.Dockerfile' }));
    expect(e.where).toBe('app.Dockerfile:5');
    expect(e.message).toBe('unknown instruction: WROKDIR');
    expect(e.hint).toBe('did you mean WORKDIR?');
  });
});

/** BuildKit's Node.Dump: `(cmd ["--flags"] "arg" ...)`, ONBUILD wrapping its instruction. */
describe('heredoc extraction (cases of BuildKit TestParseExtractsHeredoc)', () => {
  const df = [
    'FROM alpine:3.6',
    'RUN <<EMPTY',
    'EMPTY',
    'RUN 3<<EMPTY2',
    'EMPTY2',
    'RUN "<<NOHEREDOC"',
    'RUN <<INDENT',
    '\tfoo',
    '\tbar',
    'INDENT',
    'RUN <<-UNINDENT2',
    '\tbaz',
    '\tquux',
    '\tUNINDENT2',
    "RUN <<-'NOEXPAND'",
    "\tdon't expand $NAME",
    'NOEXPAND',
    'RUN <<COMMENT',
    '# internal comment',
    'echo foo bar # trailing comment',
    'COMMENT',
    'RUN --mount=type=cache,target=/foo <<MOUNT',
    'echo hello',
    'MOUNT',
    'COPY <<X <<Y /dest',
    'Y',
    'X',
    'X',
    'Y',
    'RUN <<COMPLEX python3',
    "print('hello world')",
    'COMPLEX',
    "RUN <<eo'f'",
    'echo foo',
    'eof',
    "RUN <<eo\\'f",
    'echo foo',
    "eo'f",
    "RUN <<'e'o\\'f",
    'echo foo',
    "eo'f",
    "RUN <<'one two'",
    'echo bar',
    'one two',
    'RUN <<$EOF',
    '$EOF',
    'RUN <<  EOF  > foo',
    'EOF',
    '',
  ].join('\n');
  test('names, bodies, expansion, chomping, descriptors', () => {
    const got = parseDockerfileText(df).nodes.slice(1).map((n) => n.heredocs.map((h) => [h.name, h.content, h.expand, h.chomp, h.fileDescriptor]));
    expect(got).toEqual([
      [['EMPTY', '', true, false, 0]],
      [['EMPTY2', '', true, false, 3]],
      [],
      [['INDENT', '\tfoo\n\tbar\n', true, false, 0]],
      [['UNINDENT2', '\tbaz\n\tquux\n', true, true, 0]],
      [['NOEXPAND', "\tdon't expand $NAME\n", false, true, 0]],
      [['COMMENT', '# internal comment\necho foo bar # trailing comment\n', true, false, 0]],
      [['MOUNT', 'echo hello\n', true, false, 0]],
      [
        ['X', 'Y\n', true, false, 0],
        ['Y', 'X\n', true, false, 0],
      ],
      [['COMPLEX', "print('hello world')\n", true, false, 0]],
      [['eof', 'echo foo\n', false, false, 0]],
      [["eo'f", 'echo foo\n', true, false, 0]],
      [["eo'f", 'echo foo\n', false, false, 0]],
      [['one two', 'echo bar\n', false, false, 0]],
      [['$EOF', '', true, false, 0]],
      [['EOF', '', true, false, 0]],
    ]);
  });
  test.each(['<<EOF', "<<'EOF'", '<<"EOF"', '<<-EOF', "<<-'EOF'", '<<-"EOF"', '<<EO"F"', '<< EOF', '<<- EOF'])('%s is a heredoc named EOF', (src) => {
    expect(parseHeredoc(src)?.name).toBe('EOF');
  });
  test.each(['', 'EOF', '<<', '<<-', '<EOF', '<<<EOF', '<<EOF sh'])('%j is not a heredoc', (src) => {
    expect(parseHeredoc(src)).toBeUndefined();
  });
  test.each(["<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"'])('%s is a broken heredoc', (src) => {
    expect(() => parseHeredoc(src)).toThrow();
  });
});
