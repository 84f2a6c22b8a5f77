import { describe, expect, test } from 'vitest';
import { LexError, ShellLex, envFromList, envFromMap } from '@mybuild/builder';

// Tables from BuildKit's frontend/dockerfile/shell/envVarTest and wordsTest (the data, not
// the code): `source | expected` with PWD=/home SHELL=bash KOREAN=한국어 NULL=.
const ENV_VAR_TABLE = `A|hello                    |     hello
A|he'll'o                  |     hello
A|he'llo                   |     error
A|he\\'llo                  |     he'llo
A|he\\\\'llo                 |     error
A|abc\\tdef                 |     abctdef
A|"abc\\tdef"               |     abc\\tdef
A|"abc\\\\tdef"              |     abc\\tdef
A|'abc\\tdef'               |     abc\\tdef
A|hello\\                   |     hello
A|hello\\\\                  |     hello\\
A|"hello                   |     error
A|"hello\\"                 |     error
A|"hel'lo"                 |     hel'lo
A|'hello                   |     error
A|'hello\\'                 |     hello\\
A|'hello\\there'            |     hello\\there
A|'hello\\\\there'           |     hello\\\\there
A|"''"                     |     ''
A|$.                       |     $.
A|he$1x                    |     hex
A|he$.x                    |     he$.x
U|he$pwd.                  |     he.
A|he$PWD                   |     he/home
A|he\\$PWD                  |     he$PWD
A|he\\\\$PWD                 |     he\\/home
A|"he\\$PWD"                |     he$PWD
A|"he\\\\$PWD"               |     he\\/home
A|\\\${}                     |     \${}
A|\\\${}aaa                  |     \${}aaa
A|he\\\${}                   |     he\${}
A|he\\\${}xx                 |     he\${}xx
A|\${}                      |     error
A|\${}aaa                   |     error
A|he\${}                    |     error
A|he\${}xx                  |     error
A|he\${hi}                  |     he
A|he\${hi}xx                |     hexx
A|he\${PWD}                 |     he/home
A|he\${.}                   |     error
A|he\${XXX:-000}xx          |     he000xx
A|he\${PWD:-000}xx          |     he/homexx
A|he\${XXX:-$PWD}xx         |     he/homexx
A|he\${XXX:-\${PWD:-yyy}}xx  |     he/homexx
A|he\${XXX:-\${YYY:-yyy}}xx  |     heyyyxx
A|he\${XXX:YYY}             |     error
A|he\${XXX?}                |     error
A|he\${XXX:?}               |     error
A|he\${PWD?}                |     he/home
A|he\${PWD:?}               |     he/home
A|he\${NULL?}               |     he
A|he\${NULL:?}              |     error
A|he\${XXX:+\${PWD}}xx       |     hexx
A|he\${PWD:+\${XXX}}xx       |     hexx
A|he\${PWD:+\${SHELL}}xx     |     hebashxx
A|he\${XXX:+000}xx          |     hexx
A|he\${PWD:+000}xx          |     he000xx
A|'he\${XX}'                |     he\${XX}
A|"he\${PWD}"               |     he/home
A|"he'$PWD'"               |     he'/home'
A|"$PWD"                   |     /home
A|'$PWD'                   |     $PWD
A|'\\$PWD'                  |     \\$PWD
A|'"hello"'                |     "hello"
A|he\\$PWD                  |     he$PWD
A|"he\\$PWD"                |     he$PWD
A|'he\\$PWD'                |     he\\$PWD
A|he\${PWD                  |     error
A|he\${PWD:=000}xx          |     error
A|he\${PWD:+\${PWD}:}xx      |     he/home:xx
A|he\${XXX:-\\$PWD:}xx       |     he$PWD:xx
A|he\${XXX:-\\\${PWD}z}xx     |     he\${PWDz}xx
A|안녕하세요                 |     안녕하세요
A|안'녕'하세요               |     안녕하세요
A|안'녕하세요                |     error
A|안녕\\'하세요               |     안녕'하세요
A|안\\\\'녕하세요              |     error
A|안녕\\t하세요               |     안녕t하세요
A|"안녕\\t하세요"             |     안녕\\t하세요
A|'안녕\\t하세요              |     error
A|안녕하세요\\                |     안녕하세요
A|안녕하세요\\\\               |     안녕하세요\\
A|"안녕하세요                |     error
A|"안녕하세요\\"              |     error
A|"안녕'하세요"              |     안녕'하세요
A|'안녕하세요                |     error
A|'안녕하세요\\'              |     안녕하세요\\
A|안녕$1x                    |     안녕x
A|안녕$.x                    |     안녕$.x
U|안녕$pwd.                  |     안녕.
A|안녕$PWD                   |     안녕/home
A|안녕\\$PWD                  |     안녕$PWD
A|안녕\\\\$PWD                 |     안녕\\/home
A|안녕\\\${}                   |     안녕\${}
A|안녕\\\${}xx                 |     안녕\${}xx
A|안녕\${}                    |     error
A|안녕\${}xx                  |     error
A|안녕\${hi}                  |     안녕
A|안녕\${hi}xx                |     안녕xx
A|안녕\${PWD}                 |     안녕/home
A|안녕\${.}                   |     error
A|안녕\${XXX:-000}xx          |     안녕000xx
A|안녕\${PWD:-000}xx          |     안녕/homexx
A|안녕\${XXX:-$PWD}xx         |     안녕/homexx
A|안녕\${XXX:-\${PWD:-yyy}}xx  |     안녕/homexx
A|안녕\${XXX:-\${YYY:-yyy}}xx  |     안녕yyyxx
A|안녕\${XXX:YYY}             |     error
A|안녕\${XXX:+\${PWD}}xx       |     안녕xx
A|안녕\${PWD:+\${XXX}}xx       |     안녕xx
A|안녕\${PWD:+\${SHELL}}xx     |     안녕bashxx
A|안녕\${XXX:+000}xx          |     안녕xx
A|안녕\${PWD:+000}xx          |     안녕000xx
A|'안녕\${XX}'                |     안녕\${XX}
A|"안녕\${PWD}"               |     안녕/home
A|"안녕'$PWD'"               |     안녕'/home'
A|'"안녕"'                   |     "안녕"
A|안녕\\$PWD                  |     안녕$PWD
A|"안녕\\$PWD"                |     안녕$PWD
A|'안녕\\$PWD'                |     안녕\\$PWD
A|안녕\${PWD                  |     error
A|안녕\${PWD:=000}xx          |     error
A|안녕\${PWD:+\${PWD}:}xx      |     안녕/home:xx
A|안녕\${XXX:-\\$PWD:}xx       |     안녕$PWD:xx
A|안녕\${XXX:-\\\${PWD}z}xx     |     안녕\${PWDz}xx
A|$KOREAN                    |     한국어
A|안녕$KOREAN                |     안녕한국어
A|\${{aaa}                   |     error
A|\${aaa}}                   |     }
A|\${aaa                     |     error
A|\${{aaa:-bbb}              |     error
A|\${aaa:-bbb}}              |     bbb}
A|\${aaa:-bbb                |     error
A|\${aaa:-bbb}               |     bbb
A|\${aaa:-\${bbb:-ccc}}       |     ccc
A|\${aaa:-bbb \${foo}         |     error
A|\${aaa:-bbb {foo}          |     bbb {foo
A|\${:}                      |     error
A|\${:-bbb}                  |     error
A|\${:+bbb}                  |     error
A|$1                        |
A|\${1}                      |
A|\${1:+bbb}                 |
A|\${1:-bbb}                 |     bbb
A|$2                        |
A|\${2}                      |
A|\${2:+bbb}                 |
A|\${2:-bbb}                 |     bbb
A|$3                        |
A|\${3}                      |
A|\${3:+bbb}                 |
A|\${3:-bbb}                 |     bbb
A|$4                        |
A|\${4}                      |
A|\${4:+bbb}                 |
A|\${4:-bbb}                 |     bbb
A|$5                        |
A|\${5}                      |
A|\${5:+bbb}                 |
A|\${5:-bbb}                 |     bbb
A|$6                        |
A|\${6}                      |
A|\${6:+bbb}                 |
A|\${6:-bbb}                 |     bbb
A|$7                        |
A|\${7}                      |
A|\${7:+bbb}                 |
A|\${7:-bbb}                 |     bbb
A|$8                        |
A|\${8}                      |
A|\${8:+bbb}                 |
A|\${8:-bbb}                 |     bbb
A|$9                        |
A|\${9}                      |
A|\${9:+bbb}                 |
A|\${9:-bbb}                 |     bbb
A|$999                      |
A|\${999}                    |
A|\${999:+bbb}               |
A|\${999:-bbb}               |     bbb
A|$999aaa                   |     aaa
A|\${999}aaa                 |     aaa
A|\${999:+bbb}aaa            |     aaa
A|\${999:-bbb}aaa            |     bbbaaa
A|$001                      |
A|\${001}                    |
A|\${001:+bbb}               |
A|\${001:-bbb}               |     bbb
A|$001aaa                   |     aaa
A|\${001}aaa                 |     aaa
A|\${001:+bbb}aaa            |     aaa
A|\${001:-bbb}aaa            |     bbbaaa
A|$@                        |
A|\${@}                      |
A|\${@:+bbb}                 |
A|\${@:-bbb}                 |     bbb
A|$@@@                      |     @@
A|$@aaa                     |     aaa
A|\${@}aaa                   |     aaa
A|\${@:+bbb}aaa              |     aaa
A|\${@:-bbb}aaa              |     bbbaaa
A|$*                        |
A|\${*}                      |
A|\${*:+bbb}                 |
A|\${*:-bbb}                 |     bbb
A|$#                        |
A|\${#}                      |
A|\${#:+bbb}                 |
A|\${#:-bbb}                 |     bbb
A|$?                        |
A|\${?}                      |
A|\${?:+bbb}                 |
A|\${?:-bbb}                 |     bbb
A|$-                        |
A|\${-}                      |
A|\${-:+bbb}                 |
A|\${-:-bbb}                 |     bbb
A|$$                        |
A|\${$}                      |
A|\${$:+bbb}                 |
A|\${$:-bbb}                 |     bbb
A|$!                        |
A|\${!}                      |
A|\${!:+bbb}                 |
A|\${!:-bbb}                 |     bbb
A|$0                        |
A|\${0}                      |
A|\${0:+bbb}                 |
A|\${0:-bbb}                 |     bbb`;

const WORDS_TABLE = `hello | hello
hello\${hi}bye | hellobye
ENV hi=hi
hello\${hi}bye | hellohibye
ENV space=abc  def
hello\${space}bye | helloabc,defbye
hello"\${space}"bye | helloabc  defbye
hello "\${space}"bye | hello,abc  defbye
ENV leading=  ab c
hello\${leading}def | hello,ab,cdef
hello"\${leading}" def | hello  ab c,def
hello"\${leading}" | hello  ab c
hello\${leading} | hello,ab,c
# next line MUST have 3 trailing spaces, don't erase them!
ENV trailing=ab c   
hello\${trailing} | helloab,c
hello\${trailing}d | helloab,c,d
hello"\${trailing}"d | helloab c   d
# next line MUST have 3 trailing spaces, don't erase them!
hel"lo\${trailing}" | helloab c   
hello" there  " | hello there  
hello there     | hello,there
hello\\ there | hello there
hello" there | error
hello\\" there | hello",there
hello"\\\\there" | hello\\there
hello"\\there" | hello\\there
hello'\\\\there' | hello\\\\there
hello'\\there' | hello\\there
hello'$there' | hello$there
`;

const BASE_ENV = envFromList(['PWD=/home', 'SHELL=bash', 'KOREAN=한국어', 'NULL=']);

describe('ShellLex.processWord (BuildKit envVarTest)', () => {
  const lex = new ShellLex('\\');
  const rows = ENV_VAR_TABLE.split('\n').map((line) => {
    const [, source = '', expected = ''] = line.split('|');
    return { source: source.trim(), expected: expected.trim() };
  });
  test.each(rows)('$source → $expected', ({ source, expected }) => {
    if (expected === 'error') {
      expect(() => lex.processWord(source, BASE_ENV)).toThrow(LexError);
    } else {
      expect(lex.processWord(source, BASE_ENV)).toBe(expected);
    }
  });
});

describe('ShellLex.processWords (BuildKit wordsTest)', () => {
  const lex = new ShellLex('\\');
  const env: string[] = [];
  const rows: { source: string; expected: string[]; env: string[] }[] = [];
  for (const line of WORDS_TABLE.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    if (line.startsWith('ENV ')) {
      env.push(line.slice(3).replace(/^ +/, ''));
      continue;
    }
    const [source = '', expected = ''] = line.split('|');
    rows.push({ source: source.trim(), expected: expected.replace(/^ +/, '').split(','), env: [...env] });
  }
  test.each(rows)('$source', ({ source, expected, env: list }) => {
    let result: string[];
    try {
      result = lex.processWords(source, envFromList(list));
    } catch {
      result = ['error'];
    }
    expect(result).toEqual(expected);
  });
});

describe('ShellLex modifiers (BuildKit TestProcessWithMatches)', () => {
  const lex = new ShellLex('\\');
  const cases: { input: string; env: Record<string, string>; expected?: string; matched?: string[]; unmatched?: string[] }[] = [
    { input: 'x', env: { DUMMY: 'dummy' }, expected: 'x', matched: [], unmatched: [] },
    { input: 'x ${UNUSED}', env: { DUMMY: 'dummy' }, expected: 'x ', matched: [], unmatched: ['UNUSED'] },
    { input: 'x ${FOO}', env: { FOO: 'y' }, expected: 'x y', matched: ['FOO'] },
    { input: '${FOO-aaa} ${BAR-bbb} ${BAZ-ccc}', env: { FOO: 'xxx', BAR: '' }, expected: 'xxx  ccc', matched: ['FOO', 'BAR'], unmatched: ['BAZ'] },
    { input: '${FOO:-aaa} ${BAR:-bbb} ${BAZ:-ccc}', env: { FOO: 'xxx', BAR: '' }, expected: 'xxx bbb ccc', matched: ['FOO', 'BAR'], unmatched: ['BAZ'] },
    { input: '${FOO:-}', env: { FOO: 'xxx', BAR: '' }, expected: 'xxx' },
    { input: '${FOO:-}', env: {}, expected: '', unmatched: ['FOO'] },
    { input: '${FOO+aaa} ${BAR+bbb} ${BAZ+ccc}', env: { FOO: 'xxx', BAR: '' }, expected: 'aaa bbb ' },
    { input: '${FOO:+aaa} ${BAR:+bbb} ${BAZ:+ccc}', env: { FOO: 'xxx', BAR: '' }, expected: 'aaa  ' },
    { input: '${FOO?aaa}', env: { FOO: 'xxx', BAR: '' }, expected: 'xxx' },
    { input: '${BAR?bbb}', env: { FOO: 'xxx', BAR: '' }, expected: '' },
    { input: '${BAZ?ccc}', env: { FOO: 'xxx', BAR: '' } },
    { input: '${FOO:?aaa}', env: { FOO: 'xxx', BAR: '' }, expected: 'xxx' },
    { input: '${BAR:?bbb}', env: { FOO: 'xxx', BAR: '' } },
    { input: '${BAZ:?ccc}', env: { FOO: 'xxx', BAR: '' } },
    { input: '${BAZ:?}', env: { FOO: 'xxx', BAR: '' } },
    { input: '${FOO=aaa}', env: { FOO: 'xxx', BAR: '' } },
    { input: '${FOO=:aaa}', env: { FOO: 'xxx', BAR: '' } },
    { input: '${FOO=}', env: {} },
    { input: '${FOO#()[]{\\}^$.\\*\\?|\\\\}', env: { FOO: '()[]{}^$.*?|\\x' }, expected: 'x' },
    { input: '${FOO%%\\**}', env: { FOO: 'xx**' }, expected: 'xx' },
    { input: '${FOO#*x*y}', env: { FOO: 'xxyy' }, expected: 'y' },
    { input: '${FOO#*}', env: { FOO: 'xxyy' }, expected: 'xxyy' },
    { input: '${FOO#$BAR}', env: { FOO: 'xxyy', BAR: 'x' }, expected: 'xyy' },
    { input: '${FOO#$BAR}', env: { FOO: 'xxyy', BAR: '' }, expected: 'xxyy' },
    { input: '${FOO#}', env: { FOO: 'xxyy' }, expected: 'xxyy' },
    { input: '${FOO##*x}', env: { FOO: 'xxyy' }, expected: 'yy' },
    { input: '${FOO##}', env: { FOO: 'xxyy' }, expected: 'xxyy' },
    { input: '${FOO#?\\?}', env: { FOO: '???y' }, expected: '?y' },
    { input: '${ABC:-.}${FOO%x}${ABC:-.}', env: { FOO: 'xxyy' }, expected: '.xxyy.', matched: ['FOO'], unmatched: ['ABC'] },
    { input: '${FOO%%\\**\\*}', env: { FOO: 'a***yy*' }, expected: 'a' },
    { input: '${FOO%}', env: { FOO: 'xxyy' }, expected: 'xxyy' },
    { input: '${FOO%%$BAR}', env: { FOO: 'xxyy', BAR: '' }, expected: 'xxyy' },
    { input: '${FOO:#}', env: {} },
    { input: '${FOO:##}', env: {} },
    { input: '${FOO:%}', env: {} },
    { input: '${FOO:%%}', env: {} },
    { input: '${FOO/$NEEDLE/.} - ${FOO//$NEEDLE/.}', env: { FOO: '/foo*/*/*.txt', NEEDLE: '\\*/' }, expected: '/foo.*/*.txt - /foo..*.txt' },
    { input: '${FOO/$NEEDLE/} - ${FOO//$NEEDLE/}', env: { FOO: '/tmp/tmp/bar.txt', NEEDLE: '/tmp' }, expected: '/tmp/bar.txt - /bar.txt' },
    { input: '${FOO/$NEEDLE/$REPLACEMENT} - ${FOO//$NEEDLE/$REPLACEMENT}', env: { FOO: '/a/foo/b/c.txt', NEEDLE: '/?/', REPLACEMENT: '/' }, expected: '/foo/b/c.txt - /foo/c.txt' },
    { input: '${FOO/$NEEDLE/$REPLACEMENT}', env: { FOO: 'http://google.de', NEEDLE: 'http://', REPLACEMENT: 'https://' }, expected: 'https://google.de' },
    { input: '${FOO//\\//\\/}', env: { FOO: '/tmp/foo.txt' }, expected: '\\/tmp\\/foo.txt' },
    { input: '${FOO/$BAR/ww}', env: { FOO: 'xxyy', BAR: '' }, expected: 'wwxxyy' },
    { input: '${FOO//ww}', env: { FOO: 'xxyy' } },
    { input: '${FOO//}', env: { FOO: 'xxyy' } },
    { input: '${FOO///}', env: { FOO: 'xxyy' }, expected: 'xxyy' },
    { input: '${FOO///}', env: {}, expected: '', unmatched: ['FOO'] },
    {
      input: 'something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz',
      env: { VERSION: 'v1.2.3', TARGETOS: 'linux', TARGETARCH: 'arm', TARGETVARIANT: 'v7' },
      expected: 'something-v1.2.3.linux-arm-v7.tar.gz',
    },
    {
      input: 'something-${VERSION}.${TARGETOS}-${TARGETARCH}${TARGETVARIANT:+-${TARGETVARIANT}}.tar.gz',
      env: { VERSION: 'v1.2.3', TARGETOS: 'linux', TARGETARCH: 'arm64' },
      expected: 'something-v1.2.3.linux-arm64.tar.gz',
    },
  ];
  test.each(cases)('$input', ({ input, env, expected, matched, unmatched }) => {
    if (expected === undefined) {
      expect(() => lex.processWordWithMatches(input, envFromMap(env))).toThrow(LexError);
      return;
    }
    const res = lex.processWordWithMatches(input, envFromMap(env));
    expect(res.result).toBe(expected);
    if (matched) expect([...res.matched].sort()).toEqual([...matched].sort());
    if (unmatched) expect([...res.unmatched].sort()).toEqual([...unmatched].sort());
  });

  test('mandatory variables carry the message, expanded', () => {
    const set = envFromList(['VAR=plain', 'ARG=x']);
    const empty = envFromList(['VAR=', 'ARG=x']);
    const unset = envFromList(['ARG=x']);
    expect(lex.processWord('${VAR:?message here$ARG}', set)).toBe('plain');
    expect(() => lex.processWord('${VAR:?message here$ARG}', empty)).toThrow('message herex');
    expect(() => lex.processWord('${VAR:?message here$ARG}', unset)).toThrow('message herex');
    expect(lex.processWord('${VAR?message here$ARG}', empty)).toBe('');
    expect(() => lex.processWord('${VAR?message here$ARG}', unset)).toThrow('VAR: message herex');
  });
});

describe('ShellLex options', () => {
  test('backtick escape token', () => {
    const lex = new ShellLex('`');
    expect(lex.processWord('a`$b c\\d', envFromList(['b=B']))).toBe('a$b c\\d');
    expect(lex.processWord('"x`"y"', envFromList([]))).toBe('x"y');
  });
  test('skipUnsetEnv keeps unknown references', () => {
    const lex = new ShellLex('\\', { skipUnsetEnv: true });
    expect(lex.processWord('$A ${B} ${C:-x} ${D/a/b} $E', envFromList(['E=e']))).toBe('$A ${B} ${C:-x} ${D/a/b} e');
  });
  test('rawQuotes keeps quotes', () => {
    const lex = new ShellLex('\\', { rawQuotes: true });
    expect(lex.processWords(`'a b' "c$X"`, envFromList(['X=1']))).toEqual([`'a b'`, `"c1"`]);
  });
  test('skipProcessQuotes treats quotes as text (heredoc bodies)', () => {
    const lex = new ShellLex('\\', { skipProcessQuotes: true });
    expect(lex.processWord(`echo '$X' "\\$X"\n`, envFromList(['X=1']))).toBe(`echo '1' "$X"\n`);
  });
  test('heredoc markers stay one word', () => {
    const lex = new ShellLex('\\', { rawQuotes: true, rawEscapes: true, skipUnsetEnv: true });
    expect(lex.processWords('RUN cat << EOF > a', envFromList([]))).toEqual(['RUN', 'cat', '<< EOF', '>', 'a']);
  });
  test('text before a modified substitution survives word splitting', () => {
    // BuildKit loses "80" here (a shared words buffer); see lexer.ts
    expect(new ShellLex().processWords('80${X:-0} 9', envFromList([]))).toEqual(['800', '9']);
  });
});
