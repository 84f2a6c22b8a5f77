import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { isInvalidArgument } from '@mybuild/oci';
import { IgnoreMatcher, loadDockerignore, parseIgnoreFile } from '@mybuild/builder';

/** patternmatcher's package-level Matches: "." never matches. */
const matches = (file: string, patterns: string[]) => new IgnoreMatcher(patterns).matches(file);

// Cases from moby/patternmatcher's patternmatcher_test.go (TestMatches, TestMatch, ...).
describe('IgnoreMatcher (moby/patternmatcher cases)', () => {
  const single: [string, string, boolean][] = [
    ['**', 'file', true],
    ['**', 'file/', true],
    ['**/', 'file', true],
    ['**/', 'file/', true],
    // ['**', '/'] and ['**/', '/'] are left out: "/" is the context root here, never excluded
    ['**', 'dir/file', true],
    ['**/', 'dir/file', true],
    ['**', 'dir/file/', true],
    ['**/', 'dir/file/', true],
    ['**/**', 'dir/file', true],
    ['**/**', 'dir/file/', true],
    ['dir/**', 'dir/file', true],
    ['dir/**', 'dir/file/', true],
    ['dir/**', 'dir/dir2/file', true],
    ['dir/**', 'dir/dir2/file/', true],
    ['**/dir', 'dir', true],
    ['**/dir', 'dir/file', true],
    ['**/dir2/*', 'dir/dir2/file', true],
    ['**/dir2/*', 'dir/dir2/file/', true],
    ['**/dir2/**', 'dir/dir2/dir3/file', true],
    ['**/dir2/**', 'dir/dir2/dir3/file/', true],
    ['**file', 'file', true],
    ['**file', 'dir/file', true],
    ['**/file', 'dir/file', true],
    ['**file', 'dir/dir/file', true],
    ['**/file', 'dir/dir/file', true],
    ['**/file*', 'dir/dir/file', true],
    ['**/file*', 'dir/dir/file.txt', true],
    ['**/file*txt', 'dir/dir/file.txt', true],
    ['**/file*.txt', 'dir/dir/file.txt', true],
    ['**/file*.txt*', 'dir/dir/file.txt', true],
    ['**/**/*.txt', 'dir/dir/file.txt', true],
    ['**/**/*.txt2', 'dir/dir/file.txt', false],
    ['**/*.txt', 'file.txt', true],
    ['**/**/*.txt', 'file.txt', true],
    ['a**/*.txt', 'a/file.txt', true],
    ['a**/*.txt', 'a/dir/file.txt', true],
    ['a**/*.txt', 'a/dir/dir/file.txt', true],
    ['a/*.txt', 'a/dir/file.txt', false],
    ['a/*.txt', 'a/file.txt', true],
    ['a/*.txt**', 'a/file.txt', true],
    ['a[b-d]e', 'ae', false],
    ['a[b-d]e', 'ace', true],
    ['a[b-d]e', 'aae', false],
    ['a[^b-d]e', 'aze', true],
    ['.*', '.foo', true],
    ['.*', 'foo', false],
    ['abc.def', 'abcdef', false],
    ['abc.def', 'abc.def', true],
    ['abc.def', 'abcZdef', false],
    ['abc?def', 'abcZdef', true],
    ['abc?def', 'abcdef', false],
    ['a\\\\', 'a\\', true],
    ['**/foo/bar', 'foo/bar', true],
    ['**/foo/bar', 'dir/foo/bar', true],
    ['**/foo/bar', 'dir/dir2/foo/bar', true],
    ['abc/**', 'abc', false],
    ['abc/**', 'abc/def', true],
    ['abc/**', 'abc/def/ghi', true],
    ['**/.foo', '.foo', true],
    ['**/.foo', 'bar.foo', false],
    ['a(b)c/def', 'a(b)c/def', true],
    ['a(b)c/def', 'a(b)c/xyz', false],
    ['a.|)$(}+{bc', 'a.|)$(}+{bc', true],
    ['dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', true],
    ['dist/*.whl', 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', true],
    ['a\\*b', 'a*b', true],
  ];
  test.each(single)('%s ~ %s → %s', (pattern, text, pass) => {
    expect(new IgnoreMatcher([pattern]).matches(text)).toBe(pass);
  });

  const multi: [string[], string, boolean][] = [
    [['**', '!util/docker/web'], 'util/docker/web/foo', false],
    [['**', '!util/docker/web', 'util/docker/web/foo'], 'util/docker/web/foo', true],
    [['**', '!dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl'], 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', false],
    [['**', '!dist/*.whl'], 'dist/proxy.py-2.4.0rc3.dev36+g08acad9-py3-none-any.whl', false],
    [['*'], 'fileutils.go', true],
    [['*.go'], 'fileutils.go', true],
    [['!fileutils.go', '*.go'], 'fileutils.go', true],
    [['docs', '!docs/README.md'], 'docs/README.md', false],
    [['docs/', '!docs/README.md'], 'docs/README.md', false],
    [['docs/*', '!docs/README.md'], 'docs/README.md', false],
    [['*.go', '!fileutils.go'], 'fileutils.go', false],
    [['*.go'], '.', false],
    [['**'], '/', false],
    [['**'], './', false],
    [[], '/any/path/there', false],
  ];
  test.each(multi)('%j ~ %s → %s', (patterns, text, pass) => {
    expect(matches(text, patterns)).toBe(pass);
  });

  // Go's filepath.Match cases, as patternmatcher runs them
  const goMatch: [string, string, boolean | 'bad'][] = [
    ['abc', 'abc', true],
    ['*', 'abc', true],
    ['*c', 'abc', true],
    ['a*', 'a', true],
    ['a*', 'abc', true],
    ['a*', 'ab/c', true],
    ['a*/b', 'abc/b', true],
    ['a*/b', 'a/c/b', false],
    ['a*b*c*d*e*/f', 'axbxcxdxe/f', true],
    ['a*b*c*d*e*/f', 'axbxcxdxexxx/f', true],
    ['a*b*c*d*e*/f', 'axbxcxdxe/xxx/f', false],
    ['a*b*c*d*e*/f', 'axbxcxdxexxx/fff', false],
    ['a*b?c*x', 'abxbbxdbxebxczzx', true],
    ['a*b?c*x', 'abxbbxdbxebxczzy', false],
    ['ab[c]', 'abc', true],
    ['ab[b-d]', 'abc', true],
    ['ab[e-g]', 'abc', false],
    ['ab[^c]', 'abc', false],
    ['ab[^b-d]', 'abc', false],
    ['ab[^e-g]', 'abc', true],
    ['a\\*b', 'a*b', true],
    ['a\\*b', 'ab', false],
    ['a?b', 'a☺b', true],
    ['a[^a]b', 'a☺b', true],
    ['a???b', 'a☺b', false],
    ['a[^a][^a][^a]b', 'a☺b', false],
    ['[a-ζ]*', 'α', true],
    ['*[a-ζ]', 'A', false],
    ['a?b', 'a/b', false],
    ['a*b', 'a/b', false],
    ['[\\]a]', ']', true],
    ['[\\-]', '-', true],
    ['[x\\-]', 'x', true],
    ['[x\\-]', '-', true],
    ['[x\\-]', 'z', false],
    ['[\\-x]', 'x', true],
    ['[\\-x]', '-', true],
    ['[\\-x]', 'a', false],
    ['[]a]', ']', 'bad'],
    ['[-]', '-', 'bad'],
    ['[x-]', 'x', 'bad'],
    ['[-x]', 'x', 'bad'],
    ['\\', 'a', 'bad'],
    ['[a-b-c]', 'a', 'bad'],
    ['[', 'a', 'bad'],
    ['[^', 'a', 'bad'],
    ['[^bc', 'a', 'bad'],
    ['a[', 'a', 'bad'],
    ['a[', 'ab', 'bad'],
    ['*x', 'xxx', true],
  ];
  test.each(goMatch)('filepath.Match %s ~ %s → %s', (pattern, text, want) => {
    if (want === 'bad') {
      expect(() => new IgnoreMatcher([pattern])).toThrow();
      try {
        new IgnoreMatcher([pattern]);
      } catch (err) {
        expect(isInvalidArgument(err)).toBe(true);
      }
    } else {
      expect(matches(text, [pattern])).toBe(want);
    }
  });

  test('a lone "!" is an error', () => {
    expect(() => new IgnoreMatcher(['!'])).toThrow(/illegal exclusion pattern/);
  });
  test('a pattern that only fails as a regexp is an error too', () => {
    // reversed range: valid for filepath.Match, invalid as a regexp (moby/moby#52203)
    expect(() => new IgnoreMatcher(['[Local-Only]/'])).toThrow();
  });
  test('patterns are trimmed and cleaned; empty ones dropped', () => {
    const m = new IgnoreMatcher(['docs', 'config', '', '  !docs/README.md  ']);
    expect(m.patterns.map((p) => [p.pattern, p.exclusion])).toEqual([
      ['docs', false],
      ['config', false],
      ['docs/README.md', true],
    ]);
    expect(m.hasExclusions).toBe(true);
  });
});

describe('parseIgnoreFile (ignorefile.ReadAll)', () => {
  test('comments, blank lines, leading slashes, exceptions', () => {
    const content = 'test1\n/test2\n/a/file/here\n\nlastfile\n# this is a comment\n! /inverted/abs/path\n!\n! ';
    expect(parseIgnoreFile(content)).toEqual(['test1', 'test2', 'a/file/here', 'lastfile', '!inverted/abs/path', '!', '!']);
  });
  test('BOM, CRLF, cleaning', () => {
    expect(parseIgnoreFile('\ufeff./a/../b/\r\n**/*.log\r\n  # not a comment\n')).toEqual(['b', '**/*.log', '# not a comment']);
  });
});

describe('IgnoreMatcher.canSkipDir', () => {
  test('no exceptions: an excluded directory is skipped', () => {
    const m = IgnoreMatcher.fromFile('node_modules\n*.log\n');
    expect(m.canSkipDir('node_modules')).toBe(true);
    expect(m.canSkipDir('src')).toBe(false);
  });
  test('an exception below the directory keeps it', () => {
    const m = IgnoreMatcher.fromFile('docs\n!docs/README.md\n');
    expect(m.canSkipDir('docs')).toBe(false);
    expect(m.matches('docs/README.md')).toBe(false);
    expect(m.matches('docs/other.md')).toBe(true);
    expect(m.canSkipDir('docs/sub')).toBe(true);
  });
  test('an exception with wildcards keeps every excluded directory', () => {
    const m = IgnoreMatcher.fromFile('build\n!**/*.keep\n');
    expect(m.canSkipDir('build')).toBe(false);
    expect(m.matches('build/x/a.txt')).toBe(true);
    expect(m.matches('build/x/a.keep')).toBe(false);
    expect(m.matches('build/x/.keep')).toBe(false); // * matches the empty name too
  });
  test('a trailing /** or /* on the exception is ignored for the prefix test', () => {
    const m = IgnoreMatcher.fromFile('vendor\n!vendor/keep/**\n');
    expect(m.canSkipDir('vendor')).toBe(false);
    expect(m.canSkipDir('vendor/other')).toBe(true);
    expect(m.matches('vendor/keep/a/b')).toBe(false);
  });
  test('later lines win', () => {
    const m = IgnoreMatcher.fromFile('*.md\n!README.md\nREADME.md\n');
    expect(m.matches('README.md')).toBe(true);
    expect(m.matches('a/README.md')).toBe(false);
  });
});

describe('loadDockerignore', () => {
  test('<Dockerfile>.dockerignore takes precedence over .dockerignore', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'mybuild-ignore-'));
    try {
      await mkdir(join(dir, 'sub'));
      await writeFile(join(dir, '.dockerignore'), 'a\n');
      await writeFile(join(dir, 'sub', 'app.Dockerfile.dockerignore'), 'b\n');
      const specific = await loadDockerignore(dir, join(dir, 'sub', 'app.Dockerfile'));
      expect(specific.file).toBe(join(dir, 'sub', 'app.Dockerfile.dockerignore'));
      expect(specific.matcher.matches('b')).toBe(true);
      expect(specific.matcher.matches('a')).toBe(false);
      const general = await loadDockerignore(dir, join(dir, 'Dockerfile'));
      expect(general.file).toBe(join(dir, '.dockerignore'));
      expect(general.matcher.matches('a/x')).toBe(true);
      await rm(join(dir, '.dockerignore'));
      const none = await loadDockerignore(dir);
      expect(none.file).toBeUndefined();
      expect(none.matcher.matches('a')).toBe(false);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
