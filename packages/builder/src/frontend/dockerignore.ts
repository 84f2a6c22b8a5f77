/**
 * `.dockerignore` with docker's pattern semantics (moby/patternmatcher + ignorefile, and
 * fsutil's rule for skipping whole directories): `*`, `?`, `[...]`, `**`, `!` exceptions,
 * later lines win, a path is excluded when it or any parent matches, patterns are cleaned
 * and a leading `/` is dropped. Directories are not special: `docs/` is the same as `docs`.
 *
 * As with docker, excluding the Dockerfile or the .dockerignore only hides them from
 * COPY/ADD: the Dockerfile is read on its own.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { MyBuildError, errnoCode } from '@mybuild/oci';
import { trimGoSpace } from './gofmt.js';
import { goClean } from './gopath.js';

type MatchType = 'exact' | 'prefix' | 'suffix' | 'regexp';

export interface IgnorePattern {
  /** The cleaned pattern, without its `!`. */
  readonly pattern: string;
  /** A `!` line: re-includes what earlier lines excluded. */
  readonly exclusion: boolean;
}

class CompiledPattern implements IgnorePattern {
  readonly matchType: MatchType;
  readonly regexp: RegExp | undefined;

  constructor(
    readonly pattern: string,
    readonly exclusion: boolean,
  ) {
    [this.matchType, this.regexp] = compile(pattern);
  }

  match(path: string): boolean {
    switch (this.matchType) {
      case 'exact':
        return path === this.pattern;
      case 'prefix':
        return path.startsWith(this.pattern.slice(0, -2));
      case 'suffix': {
        const suffix = this.pattern.slice(2);
        if (path.endsWith(suffix)) return true;
        return suffix.startsWith('/') && path === suffix.slice(1);
      }
      case 'regexp':
        return this.regexp!.test(path);
    }
  }
}

const SHOULD_ESCAPE = '.+()|{}$';
/** Characters a `\` may escape inside a JS character class (u mode). */
const CLASS_ESCAPABLE = '-]\\^[';
const SYNTAX_CHARS = '^$\\.*+?()[]{}|/';

/** patternmatcher's compile(): the match type and, for wildcards, the RegExp. */
function compile(pattern: string): [MatchType, RegExp | undefined] {
  const chars = Array.from(pattern);
  let re = '^';
  let type: MatchType = 'exact';
  let inClass = false;
  let classStart = 0;
  let pos = 0;
  for (let i = 0; pos < chars.length; i++) {
    const ch = chars[pos++]!;
    if (inClass) {
      // the class body goes through as written (escapes made valid for JS)
      if (ch === ']' && pos - 1 > classStart) {
        inClass = false;
        re += ']';
      } else if (ch === '\\' && pos < chars.length) {
        const next = chars[pos++]!;
        re += CLASS_ESCAPABLE.includes(next) ? '\\' + next : next;
      } else {
        re += ch;
      }
      continue;
    }
    if (ch === '*') {
      if (chars[pos] === '*') {
        pos++;
        if (chars[pos] === '/') pos++;
        if (pos >= chars.length) {
          if (type === 'exact') type = 'prefix';
          else {
            re += '[^\\n]*';
            type = 'regexp';
          }
        } else {
          re += '(?:[^\\n]*/)?';
          type = 'regexp';
        }
        if (i === 0) type = 'suffix';
      } else {
        re += '[^/]*';
        type = 'regexp';
      }
    } else if (ch === '?') {
      re += '[^/]';
      type = 'regexp';
    } else if (SHOULD_ESCAPE.includes(ch)) {
      re += '\\' + ch;
    } else if (ch === '\\') {
      if (pos < chars.length) {
        const next = chars[pos++]!;
        re += SYNTAX_CHARS.includes(next) ? '\\' + next : next;
        type = 'regexp';
      } else {
        re += '\\\\';
      }
    } else if (ch === '[') {
      re += '[';
      inClass = true;
      classStart = pos;
      if (chars[pos] === '^') {
        re += '^';
        pos++;
        classStart = pos;
      }
      type = 'regexp';
    } else if (ch === ']') {
      re += '\\]';
      type = 'regexp';
    } else {
      re += ch;
    }
  }
  if (type !== 'regexp') return [type, undefined];
  re += '$';
  try {
    return [type, new RegExp(re, 'u')];
  } catch {
    throw new Error('syntax error in pattern');
  }
}

/** Go's filepath.Match syntax check (the error filepath.Match(pattern, ".") would return). */
function validatePattern(pattern: string): boolean {
  const chars = Array.from(pattern);
  let i = 0;
  const getEsc = (): boolean => {
    if (i >= chars.length || chars[i] === '-' || chars[i] === ']') return false;
    if (chars[i] === '\\') {
      i++;
      if (i >= chars.length) return false;
    }
    i++;
    return i < chars.length;
  };
  while (i < chars.length) {
    const ch = chars[i]!;
    if (ch === '\\') {
      i += 2;
      if (i > chars.length) return false;
      continue;
    }
    if (ch !== '[') {
      i++;
      continue;
    }
    i++;
    if (chars[i] === '^') i++;
    let nrange = 0;
    for (;;) {
      if (i < chars.length && chars[i] === ']' && nrange > 0) {
        i++;
        break;
      }
      if (!getEsc()) return false;
      if (chars[i] === '-') {
        i++;
        if (!getEsc()) return false;
      }
      nrange++;
    }
  }
  return true;
}

export class IgnoreMatcher {
  private readonly compiled: CompiledPattern[];
  /** Some pattern is a `!` exception. */
  readonly hasExclusions: boolean;
  private readonly onlyPrefixExceptions: boolean;

  /**
   * `patterns` as read from a .dockerignore ({@link parseIgnoreFile}); each is trimmed and
   * cleaned again, as docker does. Throws MyBuildError for a malformed pattern.
   */
  constructor(patterns: readonly string[], source = '.dockerignore') {
    this.compiled = [];
    for (const raw of patterns) {
      let p = trimGoSpace(raw);
      if (p === '') continue;
      p = goClean(p);
      let exclusion = false;
      if (p[0] === '!') {
        if (p.length === 1) throw bad(source, 'illegal exclusion pattern: "!"', raw);
        exclusion = true;
        p = p.slice(1);
      }
      if (!validatePattern(p)) throw bad(source, 'syntax error in pattern', raw);
      try {
        this.compiled.push(new CompiledPattern(p, exclusion));
      } catch {
        throw bad(source, 'syntax error in pattern', raw);
      }
    }
    this.hasExclusions = this.compiled.some((p) => p.exclusion);
    this.onlyPrefixExceptions = this.compiled.every((p) => !p.exclusion || !/[*[\]?^\\]/.test(withoutTrailingGlob(p.pattern)));
  }

  /** Builds a matcher from the text of a .dockerignore file. */
  static fromFile(text: string, source = '.dockerignore'): IgnoreMatcher {
    return new IgnoreMatcher(parseIgnoreFile(text), source);
  }

  get patterns(): readonly IgnorePattern[] {
    return this.compiled;
  }

  /**
   * Whether `relPath` (slash-separated, relative to the context root) is excluded: it or
   * one of its parents matches a pattern, and no later `!` pattern re-includes it.
   * `isDir` is accepted for symmetry with walkers; docker's patterns do not depend on it.
   */
  matches(relPath: string, isDir = false): boolean {
    void isDir;
    const file = goClean(relPath.replace(/^\/+/, ''));
    if (file === '.') return false;
    const slash = file.lastIndexOf('/');
    const parentPath = slash < 0 ? '.' : file.slice(0, slash);
    const parentDirs = parentPath.split('/');
    let matched = false;
    for (const p of this.compiled) {
      if (p.exclusion !== matched) continue;
      let match = p.match(file);
      if (!match && parentPath !== '.') {
        for (let i = 0; i < parentDirs.length && !match; i++) match = p.match(parentDirs.slice(0, i + 1).join('/'));
      }
      if (match) matched = !p.exclusion;
    }
    return matched;
  }

  /**
   * Whether a walker can skip directory `relDir` entirely: it is excluded and no `!`
   * exception could re-include anything below it (fsutil's rule: exceptions with
   * wildcards make every excluded directory worth walking).
   */
  canSkipDir(relDir: string): boolean {
    if (!this.matches(relDir, true)) return false;
    if (!this.hasExclusions) return true;
    if (!this.onlyPrefixExceptions) return false;
    const dirSlash = goClean(relDir.replace(/^\/+/, '')) + '/';
    for (const p of this.compiled) {
      if (p.exclusion && (withoutTrailingGlob(p.pattern) + '/').startsWith(dirSlash)) return false;
    }
    return true;
  }
}

function withoutTrailingGlob(p: string): string {
  let s = p;
  if (s.endsWith('/**')) s = s.slice(0, -3);
  if (s.endsWith('/*')) s = s.slice(0, -2);
  return s;
}

function bad(source: string, message: string, pattern: string): MyBuildError {
  return new MyBuildError('INVALID_ARGUMENT', `${message}: ${JSON.stringify(pattern)}`, {
    where: source,
    hint: 'patterns use * ? [...] and **; a character class needs its closing ]; "\\" escapes one character',
  });
}

/**
 * The patterns of a .dockerignore file (moby/patternmatcher/ignorefile.ReadAll): BOM
 * stripped, `#` lines skipped, whitespace trimmed, paths cleaned, leading "/" removed.
 */
export function parseIgnoreFile(text: string): string[] {
  const out: string[] = [];
  let first = true;
  for (let line of text.split('\n')) {
    if (first && line.startsWith('\ufeff')) line = line.slice(1);
    first = false;
    line = line.replace(/\r$/, '');
    if (line.startsWith('#')) continue;
    let pattern = trimGoSpace(line);
    if (pattern === '') continue;
    const invert = pattern[0] === '!';
    if (invert) pattern = trimGoSpace(pattern.slice(1));
    if (pattern.length > 0) {
      pattern = goClean(pattern);
      if (pattern.length > 1 && pattern[0] === '/') pattern = pattern.slice(1);
    }
    out.push(invert ? '!' + pattern : pattern);
  }
  return out;
}

export interface LoadedIgnore {
  matcher: IgnoreMatcher;
  /** The file the patterns came from, or undefined when there is none. */
  file: string | undefined;
}

/**
 * Reads the ignore file for a build: `<dockerfile>.dockerignore` beside the Dockerfile when
 * it exists (it takes precedence), else `<context>/.dockerignore`. No file: nothing excluded.
 */
export async function loadDockerignore(contextDir: string, dockerfilePath?: string): Promise<LoadedIgnore> {
  const candidates = [...(dockerfilePath ? [`${dockerfilePath}.dockerignore`] : []), join(contextDir, '.dockerignore')];
  for (const file of candidates) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') continue;
      throw err;
    }
    return { matcher: IgnoreMatcher.fromFile(text, file), file };
  }
  return { matcher: new IgnoreMatcher([]), file: undefined };
}
