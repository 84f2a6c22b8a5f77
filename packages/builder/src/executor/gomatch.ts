/**
 * Go's `path/filepath.Match` (Unix): the glob syntax COPY/ADD sources use. `*` and `?` never
 * match `/`; `[...]` classes (with `^` negation and ranges); `\` escapes the next character.
 * A malformed pattern is an error, as in Go (ErrBadPattern).
 */

export class BadPatternError extends Error {
  constructor(pattern: string) {
    super(`syntax error in pattern ${JSON.stringify(pattern)}`);
  }
}

const cache = new Map<string, RegExp>();

/** Whether `name` matches the whole `pattern`. Throws {@link BadPatternError}. */
export function goMatch(pattern: string, name: string): boolean {
  let re = cache.get(pattern);
  if (!re) {
    re = compileGlob(pattern);
    if (cache.size > 1000) cache.clear();
    cache.set(pattern, re);
  }
  return re.test(name);
}

/** fsutil's containsWildcards: an unescaped `*`, `?` or `[`. */
export function hasWildcards(p: string): boolean {
  for (let i = 0; i < p.length; i++) {
    const c = p[i];
    if (c === '\\') i++;
    else if (c === '*' || c === '?' || c === '[') return true;
  }
  return false;
}

/**
 * fsutil's splitWildcards: the leading components without wildcards, and the rest (from the
 * first component with one). `a/b/*.js/c` → [`a/b`, `*.js/c`].
 */
export function splitWildcards(p: string): [string, string] {
  const parts = p.split('/').filter((s) => s !== '' && s !== '.');
  const i = parts.findIndex(hasWildcards);
  if (i < 0) return [parts.join('/'), ''];
  return [parts.slice(0, i).join('/'), parts.slice(i).join('/')];
}

function compileGlob(pattern: string): RegExp {
  const chars = Array.from(pattern);
  let re = '^';
  let i = 0;
  while (i < chars.length) {
    const c = chars[i++]!;
    switch (c) {
      case '*':
        re += '[^/]*';
        break;
      case '?':
        re += '[^/]';
        break;
      case '\\': {
        if (i >= chars.length) throw new BadPatternError(pattern);
        re += escapeRe(chars[i++]!);
        break;
      }
      case '[': {
        let cls = '[';
        if (chars[i] === '^') {
          cls += '^';
          i++;
        }
        let n = 0;
        for (;;) {
          if (i >= chars.length) throw new BadPatternError(pattern);
          let ch = chars[i++]!;
          if (ch === ']' && n > 0) break;
          if (ch === '\\') {
            if (i >= chars.length) throw new BadPatternError(pattern);
            ch = chars[i++]!;
          } else if (ch === '-' || ch === ']') {
            // Go: a bare '-' or ']' at a range position is malformed
            if (ch === '-' || n === 0) throw new BadPatternError(pattern);
          }
          let lo = ch;
          let hi = ch;
          if (chars[i] === '-') {
            i++;
            if (i >= chars.length) throw new BadPatternError(pattern);
            hi = chars[i++]!;
            if (hi === '\\') {
              if (i >= chars.length) throw new BadPatternError(pattern);
              hi = chars[i++]!;
            } else if (hi === ']' || hi === '-') throw new BadPatternError(pattern);
            if (hi.codePointAt(0)! < lo.codePointAt(0)!) throw new BadPatternError(pattern);
          }
          cls += lo === hi ? classChar(lo) : `${classChar(lo)}-${classChar(hi)}`;
          n++;
        }
        re += `${cls}]`;
        break;
      }
      default:
        re += escapeRe(c);
    }
  }
  return new RegExp(`${re}$`, 'su');
}

function escapeRe(c: string): string {
  return /[\\^$.*+?()[\]{}|/-]/.test(c) ? `\\${c}` : c;
}

function classChar(c: string): string {
  return /[\\\]^[-]/.test(c) ? `\\${c}` : c;
}
