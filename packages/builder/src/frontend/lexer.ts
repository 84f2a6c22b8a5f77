/**
 * Shell-like word processing and variable substitution with the semantics of BuildKit's
 * Dockerfile lexer (frontend/dockerfile/shell/lex.go): quotes, the escape token, `$v`,
 * `${v}`, `${v:-d}`, `${v-d}`, `${v:+a}`, `${v+a}`, `${v:?m}`, `${v?m}`, `${v#p}`,
 * `${v##p}`, `${v%p}`, `${v%%p}`, `${v/p/r}`, `${v//p/r}`; word splitting after expansion.
 */
import { goQuote, isGoSpace } from './gofmt.js';

/** Where variable values come from. Keys are case-sensitive (Linux). */
export interface EnvGetter {
  get(key: string): string | undefined;
  keys(): string[];
}

/** An EnvGetter over `KEY=VALUE` entries; a later entry for a key wins. */
export function envFromList(list: readonly string[]): EnvGetter {
  const map = new Map<string, string>();
  for (const e of list) {
    const eq = e.indexOf('=');
    if (eq < 0) map.set(e, '');
    else map.set(e.slice(0, eq), e.slice(eq + 1));
  }
  return envFromMap(map);
}

export function envFromMap(map: ReadonlyMap<string, string> | Record<string, string>): EnvGetter {
  const m = map instanceof Map ? map : new Map(Object.entries(map));
  return { get: (k) => m.get(k), keys: () => [...m.keys()] };
}

export const EMPTY_ENV: EnvGetter = { get: () => undefined, keys: () => [] };

/** A syntax or substitution error (`${x:?msg}` on an unset x, a missing `}`, ...). */
export class LexError extends Error {
  override readonly name = 'LexError';
}

export interface LexOptions {
  /** Keep quote characters in the output (used to detect quoted heredoc delimiters). */
  rawQuotes?: boolean;
  /** Keep escape characters in the output. */
  rawEscapes?: boolean;
  /** Treat quotes as ordinary characters. */
  skipProcessQuotes?: boolean;
  /** Leave references to unset variables as written. */
  skipUnsetEnv?: boolean;
}

export interface ProcessResult {
  result: string;
  words: string[];
  /** Variables that were referenced and set. */
  matched: Set<string>;
  /** Variables that were referenced but not set. */
  unmatched: Set<string>;
}

const EOF = '';

class Words {
  buf = '';
  words: string[] = [];
  inWord = false;

  addChar(ch: string): void {
    if (isGoSpace(ch) && this.inWord) {
      if (this.buf.length !== 0) {
        this.words.push(this.buf);
        this.buf = '';
        this.inWord = false;
      }
    } else if (!isGoSpace(ch)) {
      this.addRawChar(ch);
    }
  }

  addRawChar(ch: string): void {
    this.buf += ch;
    this.inWord = true;
  }

  addString(s: string): void {
    for (const ch of s) this.addChar(ch);
  }

  addRawString(s: string): void {
    this.buf += s;
    this.inWord = true;
  }

  getWords(): string[] {
    if (this.buf.length > 0) {
      this.words.push(this.buf);
      this.buf = '';
      this.inWord = false;
    }
    return this.words;
  }
}

/**
 * One lexer per escape token and option set. Not re-entrant across calls of the same
 * instance from inside an EnvGetter (there is no reason to).
 */
export class ShellLex {
  readonly escapeToken: string;
  readonly options: Readonly<LexOptions>;

  constructor(escapeToken = '\\', options: LexOptions = {}) {
    this.escapeToken = escapeToken;
    this.options = { ...options };
  }

  /** A copy with some options changed. */
  with(options: LexOptions): ShellLex {
    return new ShellLex(this.escapeToken, { ...this.options, ...options });
  }

  /** Expands variables and removes quotes; spaces between words are kept. */
  processWord(word: string, env: EnvGetter): string {
    return this.process(word, env).result;
  }

  /** Expands variables, removes quotes, then splits into words (quoted spaces kept). */
  processWords(word: string, env: EnvGetter): string[] {
    return this.process(word, env).words;
  }

  processWordWithMatches(word: string, env: EnvGetter): ProcessResult {
    return this.process(word, env);
  }

  private process(word: string, env: EnvGetter): ProcessResult {
    const sw = new ShellWord(this, word, env);
    try {
      const [result, words] = sw.processStopOn(EOF, this.options.rawEscapes ?? false);
      return { result, words, matched: sw.matches, unmatched: sw.nonmatches };
    } catch (err) {
      if (err instanceof LexError) throw new LexError(`failed to process ${goQuote(word)}: ${err.message}`);
      throw err;
    }
  }
}

class ShellWord {
  private readonly chars: string[];
  private pos = 0;
  private rawEscapes: boolean;
  readonly matches = new Set<string>();
  readonly nonmatches = new Set<string>();

  constructor(
    private readonly lex: ShellLex,
    word: string,
    private readonly env: EnvGetter,
  ) {
    this.chars = Array.from(word);
    this.rawEscapes = lex.options.rawEscapes ?? false;
  }

  private peek(): string {
    return this.pos < this.chars.length ? this.chars[this.pos]! : EOF;
  }

  private next(): string {
    return this.pos < this.chars.length ? this.chars[this.pos++]! : EOF;
  }

  /** Processes up to `stopChar` (consumed) or the end; EOF before a stop char is an error. */
  processStopOn(stopChar: string, rawEscapes: boolean): [string, string[]] {
    const saved = this.rawEscapes;
    this.rawEscapes = rawEscapes;
    try {
      return this.processStopOnInner(stopChar);
    } finally {
      this.rawEscapes = saved;
    }
  }

  private processStopOnInner(stopChar: string): [string, string[]] {
    let result = '';
    // Each nested call gets its own words buffer. (BuildKit shares one buffer between the
    // nested calls made for `${v:-...}`, which loses the text before the substitution when
    // splitting words; we do not reproduce that.)
    const words = new Words();
    const escape = this.lex.escapeToken;
    const quotes = !this.lex.options.skipProcessQuotes;

    while (this.peek() !== EOF) {
      const ch = this.peek();
      if (stopChar !== EOF && ch === stopChar) {
        this.next();
        return [result, words.getWords()];
      }
      let special: (() => string) | undefined;
      if (ch === '$') special = () => this.processDollar();
      else if (ch === '<') special = () => this.processPossibleHeredoc();
      else if (quotes && ch === "'") special = () => this.processSingleQuote();
      else if (quotes && ch === '"') special = () => this.processDoubleQuote();
      if (special) {
        const tmp = special();
        result += tmp;
        if (ch === '$') words.addString(tmp);
        else words.addRawString(tmp);
        continue;
      }
      let c = this.next();
      if (c === escape) {
        if (this.rawEscapes) {
          words.addRawChar(c);
          result += c;
        }
        c = this.next();
        if (c === EOF) break;
        words.addRawChar(c);
      } else {
        words.addChar(c);
      }
      result += c;
    }
    if (stopChar !== EOF) {
      throw new LexError(`unexpected end of statement while looking for matching ${stopChar}`);
    }
    return [result, words.getWords()];
  }

  private processSingleQuote(): string {
    let result = '';
    const open = this.next();
    if (this.lex.options.rawQuotes) result += open;
    for (;;) {
      const ch = this.next();
      if (ch === EOF) throw new LexError('unexpected end of statement while looking for matching single-quote');
      if (ch === "'") {
        if (this.lex.options.rawQuotes) result += ch;
        return result;
      }
      result += ch;
    }
  }

  private processDoubleQuote(): string {
    let result = '';
    const open = this.next();
    if (this.lex.options.rawQuotes) result += open;
    const escape = this.lex.escapeToken;
    for (;;) {
      const p = this.peek();
      if (p === EOF) throw new LexError('unexpected end of statement while looking for matching double-quote');
      if (p === '"') {
        const ch = this.next();
        if (this.lex.options.rawQuotes) result += ch;
        return result;
      }
      if (p === '$') {
        result += this.processDollar();
        continue;
      }
      let ch = this.next();
      if (ch === escape) {
        if (this.rawEscapes) result += ch;
        const after = this.peek();
        if (after === EOF) continue; // a trailing escape is dropped
        if (after === '"' || after === '$' || after === escape) ch = this.next();
      }
      result += ch;
    }
  }

  private processDollar(): string {
    this.next(); // '$'
    const skipUnset = this.lex.options.skipUnsetEnv ?? false;
    if (this.peek() !== '{') {
      const name = this.processName();
      if (name === '') return '$';
      const value = this.getEnv(name);
      if (value === undefined && skipUnset) return '$' + name;
      return value ?? '';
    }
    this.next(); // '{'
    const first = this.peek();
    if (first === EOF) throw new LexError("syntax error: missing '}'");
    if (first === '{' || first === '}' || first === ':') throw new LexError('syntax error: bad substitution');
    const name = this.processName();
    let ch = this.next();
    let chs = ch === EOF ? '\ufffd' : ch;
    let nullIsUnset = false;

    if (ch === '}') {
      const value = this.getEnv(name);
      if (value === undefined && skipUnset) return `\${${name}}`;
      return value ?? '';
    }
    if (ch === ':' || ch === '+' || ch === '-' || ch === '?' || ch === '#' || ch === '%') {
      if (ch === ':') {
        nullIsUnset = true;
        ch = this.next();
        chs += ch === EOF ? '\ufffd' : ch;
      }
      const rawEscapes = ch === '#' || ch === '%';
      if (nullIsUnset && rawEscapes) throw new LexError(`unsupported modifier (${chs}) in substitution`);
      let word: string;
      try {
        [word] = this.processStopOn('}', rawEscapes);
      } catch (err) {
        if (err instanceof LexError && this.peek() === EOF) throw new LexError("syntax error: missing '}'");
        throw err;
      }
      const value = this.getEnv(name);
      const set = value !== undefined;
      if (skipUnset && !set) return `\${${name}${chs}${word}}`;
      const v = value ?? '';
      switch (ch) {
        case '-':
          return !set || (nullIsUnset && v === '') ? word : v;
        case '+':
          return !set || (nullIsUnset && v === '') ? '' : word;
        case '?':
          if (!set) throw new LexError(`${name}: ${word !== '' ? word : 'is not allowed to be unset'}`);
          if (nullIsUnset && v === '') throw new LexError(`${name}: ${word !== '' ? word : 'is not allowed to be empty'}`);
          return v;
        case '%':
        case '#': {
          let greedy = false;
          let pattern = word;
          if (pattern.length > 0 && pattern[0] === ch) {
            greedy = true;
            pattern = pattern.slice(1);
          }
          return ch === '%' ? trimSuffix(pattern, v, greedy) : trimPrefix(pattern, v, greedy);
        }
        default:
          throw new LexError(`unsupported modifier (${chs}) in substitution`);
      }
    }
    if (ch === '/') {
      const replaceAll = this.peek() === '/';
      if (replaceAll) this.next();
      let pattern: string;
      let replacement: string;
      try {
        [pattern] = this.processStopOn('/', true);
      } catch (err) {
        if (err instanceof LexError && this.peek() === EOF) throw new LexError("syntax error: missing '/' in ${}");
        throw err;
      }
      try {
        [replacement] = this.processStopOn('}', true);
      } catch (err) {
        if (err instanceof LexError && this.peek() === EOF) throw new LexError("syntax error: missing '}'");
        throw err;
      }
      const value = this.getEnv(name);
      if (skipUnset && value === undefined) return `\${${name}/${pattern}/${replacement}}`;
      const re = shellPatternToRegExp(pattern, true, false, replaceAll);
      // the replacement is literal text (a function keeps `$&` and friends from being special)
      return (value ?? '').replace(re, () => replacement);
    }
    throw new LexError(`unsupported modifier (${chs}) in substitution`);
  }

  private processName(): string {
    let name = '';
    while (this.peek() !== EOF) {
      const ch = this.peek();
      if (name.length === 0 && isDigit(ch)) {
        while (this.peek() !== EOF && isDigit(this.peek())) name += this.next();
        return name;
      }
      if (name.length === 0 && isSpecialParam(ch)) return this.next();
      if (!isNameChar(ch)) break;
      name += this.next();
    }
    return name;
  }

  private processPossibleHeredoc(): string {
    this.next(); // '<'
    if (this.peek() !== '<') return '<';
    this.next();
    let space = '';
    while (this.peek() === ' ' || this.peek() === '\t' || this.peek() === '\r') space += this.next();
    return '<<' + space;
  }

  private getEnv(name: string): string | undefined {
    const v = this.env.get(name);
    if (v !== undefined) this.matches.add(name);
    else this.nonmatches.add(name);
    return v;
  }
}

// Unicode classes for what is not ASCII (most names and digits are: their regexps compile on first use, a millisecond or two of every build).
const UNICODE_NAME_CHAR = /^[\p{L}\p{Nd}_]$/u;
const UNICODE_DIGIT = /^\p{Nd}$/u;

/** Go's unicode.IsLetter || unicode.IsDigit || '_' (a variable name's characters). */
function isNameChar(ch: string): boolean {
  if (ch.length === 1 && ch.charCodeAt(0) < 0x80) return /^[A-Za-z0-9_]$/.test(ch);
  return UNICODE_NAME_CHAR.test(ch);
}

function isDigit(ch: string): boolean {
  if (ch.length === 1 && ch.charCodeAt(0) < 0x80) return ch >= '0' && ch <= '9';
  return UNICODE_DIGIT.test(ch);
}

function isSpecialParam(ch: string): boolean {
  return '@*#?-$!0'.includes(ch) && ch.length === 1;
}

/**
 * A shell wildcard pattern (`*`, `?`, `\` escapes; no bracket expressions) as a RegExp.
 * `\}` and `\/` stand for the literal characters; any other escape must be `\*`, `\?` or `\\`.
 */
function shellPatternToRegExp(pattern: string, greedy: boolean, anchored: boolean, global = false): RegExp {
  const chars = Array.from(pattern);
  let out = anchored ? '^' : '';
  // Go's `.` matches anything but a newline
  const star = greedy ? '[^\\n]*' : '[^\\n]*?';
  for (let i = 0; i < chars.length; i++) {
    const tok = chars[i]!;
    if (tok === '*') {
      out += star;
      continue;
    }
    if (tok === '?') {
      out += '[^\\n]';
      continue;
    }
    if (tok === '\\') {
      const nextCh = chars[i + 1];
      if (nextCh === '}' || nextCh === '/') continue;
      i++;
      if (nextCh !== '*' && nextCh !== '?' && nextCh !== '\\') {
        throw new LexError(`invalid pattern (${pattern}) in substitution: invalid escape '\\${nextCh ?? ''}'`);
      }
      out += '\\' + nextCh;
      continue;
    }
    out += /[\^$.+()[\]{}|/]/.test(tok) ? '\\' + tok : tok;
  }
  return new RegExp(out, global ? 'gu' : 'u');
}

function trimPrefix(pattern: string, value: string, greedy: boolean): string {
  const re = shellPatternToRegExp(pattern, greedy, true);
  const m = re.exec(value);
  return m ? value.slice(m.index + m[0].length) : value;
}

/** Reverses a pattern without reversing its escapes: `a\*c` → `c\*a`. */
function reversePattern(pattern: string): string {
  const runes = Array.from(pattern);
  const out: string[] = Array.from({ length: runes.length }, () => '');
  const last = runes.length - 1;
  for (let i = 0; i <= last; ) {
    const tok = runes[i]!;
    const outIdx = last - i;
    if (tok === '\\' && i !== last) {
      out[outIdx - 1] = tok;
      out[outIdx] = runes[i + 1]!;
      i += 2;
    } else {
      out[outIdx] = tok;
      i++;
    }
  }
  return out.join('');
}

function reverseString(s: string): string {
  return Array.from(s).reverse().join('');
}

function trimSuffix(pattern: string, value: string, greedy: boolean): string {
  // the shortest rightmost match is the shortest leftmost match of the reversed strings
  return reverseString(trimPrefix(reversePattern(pattern), reverseString(value), greedy));
}
