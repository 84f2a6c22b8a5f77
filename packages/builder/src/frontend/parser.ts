/**
 * Dockerfile text → nodes with line numbers, the way BuildKit's parser package reads it:
 * parser directives at the top (`# escape=`, `# syntax=`, `# check=`), line continuations
 * with the escape token, comments and empty lines inside continuations, heredocs, and the
 * per-instruction argument shapes (JSON array or shell form, key=value lists, ...).
 *
 * dockerfile-ast is not used here: it does not expose heredoc bodies, splits arguments on
 * whitespace including heredoc bodies, and treats a JSON array with non-string items as
 * shell form where docker rejects it.
 */
import { dfError } from './errors.js';
import { goQuote, isGoSpace, trimGoSpace, trimLeftGoSpace } from './gofmt.js';
import { EMPTY_ENV, ShellLex } from './lexer.js';

export interface Heredoc {
  /** The delimiter word, quotes removed. */
  name: string;
  /** `3<<EOF` → 3; 0 when not given. */
  fileDescriptor: number;
  /** false when any part of the delimiter was quoted: the body is not expanded. */
  expand: boolean;
  /** `<<-`: leading tabs are stripped from the body (and the delimiter line). */
  chomp: boolean;
  /** The body, every line with its newline, without the delimiter line. */
  content: string;
}

export interface Node {
  /** The instruction word as written (`RUN`, `run`). */
  keyword: string;
  /** Lower-case instruction word. */
  cmd: string;
  /** Leading `--flag[=value]` words, quotes removed. */
  flags: string[];
  /**
   * Arguments, shaped per instruction like BuildKit: ENV/LABEL as key,value,separator
   * triples; HEALTHCHECK as type then command; others as a list (one string for shell form).
   */
  args: string[];
  /** The arguments were a JSON array (exec form). */
  json: boolean;
  /** The logical line (continuations joined, comments removed). */
  original: string;
  heredocs: Heredoc[];
  /** For ONBUILD: the wrapped instruction. */
  child?: Node;
  startLine: number;
  endLine: number;
}

export interface Directive {
  name: 'syntax' | 'escape' | 'check';
  value: string;
  line: number;
}

export interface ParseWarning {
  rule: string;
  message: string;
  line: number;
}

export interface ParseResult {
  nodes: Node[];
  escapeToken: string;
  directives: Directive[];
  warnings: ParseWarning[];
}

const RE_WHITESPACE = /[\t\v\f\r ]+/;
/** `[fd]<<[-] word` — Go's \s is ASCII whitespace without \v. */
const RE_HEREDOC = /^(\d*)<<(-?)[\t\n\f\r ]*([^<]*)$/;
const RE_DIRECTIVE = /^([a-zA-Z][a-zA-Z0-9]*)[\t\n\f\r ]*=[\t\n\f\r ]*(.+?)[\t\n\f\r ]*$/;
const HEREDOC_COMMANDS = new Set(['add', 'copy', 'run']);

class DirectiveParser {
  private done = false;
  private readonly seen = new Set<string>();
  readonly found: Directive[] = [];

  /** Returns the directive on this line, if any (and only while still at the top). */
  parseLine(line: string, lineNo: number): Directive | undefined {
    if (this.done) return undefined;
    if (!line.startsWith('#')) {
      this.done = true;
      return undefined;
    }
    const m = RE_DIRECTIVE.exec(trimLeftGoSpace(line.slice(1)));
    if (!m) {
      this.done = true;
      return undefined;
    }
    const name = m[1]!.toLowerCase();
    if (name !== 'syntax' && name !== 'escape' && name !== 'check') {
      this.done = true;
      return undefined;
    }
    if (this.seen.has(name)) throw dfError(`only one ${name} parser directive can be used`, lineNo);
    this.seen.add(name);
    const d: Directive = { name, value: m[2]!, line: lineNo };
    this.found.push(d);
    return d;
  }
}

function escapeRegExp(ch: string): string {
  return ch.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&');
}

class Directives {
  escapeToken = '\\';
  private continuation = Directives.continuationRegex('\\');
  readonly parser = new DirectiveParser();

  static continuationRegex(token: string): RegExp {
    const e = escapeRegExp(token);
    return new RegExp(`([^${e}])${e}[ \\t]*$|^${e}[ \\t]*$`);
  }

  setEscapeToken(value: string, line: number): void {
    if (value !== '`' && value !== '\\') {
      throw dfError(`invalid escape token '${value}' does not match \` or \\`, line);
    }
    this.escapeToken = value;
    this.continuation = Directives.continuationRegex(value);
  }

  /** Strips a trailing continuation token; returns [line, isEndOfLine]. */
  trimContinuation(line: string): [string, boolean] {
    if (this.continuation.test(line)) return [line.replace(this.continuation, '$1'), false];
    return [line, true];
  }
}

function trimNewline(s: string): string {
  return s.replace(/[\r\n]+$/, '');
}

function isComment(line: string): boolean {
  return trimLeftGoSpace(line).startsWith('#');
}

/** Splits text into lines that keep their "\n" (bufio.ScanLines without the stripping). */
function scanLines(text: string): string[] {
  const out: string[] = [];
  let start = 0;
  for (;;) {
    const i = text.indexOf('\n', start);
    if (i < 0) {
      if (start < text.length) out.push(text.slice(start));
      return out;
    }
    out.push(text.slice(start, i + 1));
    start = i + 1;
  }
}

/** Parses Dockerfile text. Throws DockerfileError. */
export function parseDockerfileText(text: string): ParseResult {
  const d = new Directives();
  const lines = scanLines(text);
  const nodes: Node[] = [];
  const warnings: ParseWarning[] = [];
  let idx = 0;
  let currentLine = 0;

  const processLine = (raw: string, stripLeft: boolean, lineNo: number): string => {
    let token = trimNewline(raw);
    if (stripLeft) token = trimLeftGoSpace(token);
    const directive = d.parser.parseLine(token, lineNo);
    if (directive?.name === 'escape') d.setEscapeToken(directive.value, lineNo);
    return isComment(token) ? '' : token;
  };

  while (idx < lines.length) {
    let raw = lines[idx++]!;
    if (currentLine === 0 && raw.startsWith('\ufeff')) raw = raw.slice(1);
    let bytesRead = processLine(raw, true, currentLine + 1);
    currentLine++;
    const startLine = currentLine;
    let isEndOfLine: boolean;
    [bytesRead, isEndOfLine] = d.trimContinuation(bytesRead);
    if (isEndOfLine && bytesRead.length === 0) continue;
    let buf = bytesRead;
    let hasEmptyContinuationLine = false;
    while (!isEndOfLine && idx < lines.length) {
      const next = lines[idx++]!;
      let part = processLine(next, false, currentLine + 1);
      currentLine++;
      if (isComment(next)) continue;
      if (trimLeftGoSpace(trimNewline(part)).length === 0) {
        hasEmptyContinuationLine = true;
        continue;
      }
      [part, isEndOfLine] = d.trimContinuation(part);
      buf += part;
    }
    if (hasEmptyContinuationLine) {
      warnings.push({
        rule: 'NoEmptyContinuation',
        message: 'Empty continuation line (empty continuation lines will become errors in a future release)',
        line: currentLine,
      });
    }
    const line = buf;
    const node = nodeFromLine(line, d.escapeToken, startLine, currentLine);
    if (canContainHeredoc(node) && line.includes('<<')) {
      const heredocs = heredocsFromLine(line, startLine, currentLine);
      for (const h of heredocs) {
        let terminated = false;
        let content = '';
        while (idx < lines.length) {
          const l = lines[idx++]!;
          currentLine++;
          let candidate = trimNewline(l);
          if (h.chomp) candidate = candidate.replace(/^\t+/, '');
          if (candidate === h.name) {
            terminated = true;
            break;
          }
          content += l;
        }
        if (!terminated) throw dfError('unterminated heredoc', startLine);
        h.content = content;
        node.heredocs.push(h);
      }
    }
    node.endLine = currentLine;
    nodes.push(node);
  }
  return { nodes, escapeToken: d.escapeToken, directives: d.parser.found, warnings };
}

function canContainHeredoc(node: Node): boolean {
  const n = node.cmd === 'onbuild' && node.child ? node.child : node;
  return HEREDOC_COMMANDS.has(n.cmd) && !n.json;
}

/** Splits `CMD --flags rest` into the instruction word, its flags and the rest. */
function splitCommand(line: string, escapeToken: string, lineNo: number): [string, string[], string] {
  const trimmed = trimGoSpace(line);
  const m = RE_WHITESPACE.exec(trimmed);
  if (!m) return [trimmed, [], ''];
  const cmd = trimmed.slice(0, m.index);
  const rest = trimmed.slice(m.index + m[0].length);
  const [args, flags] = extractBuilderFlags(rest, escapeToken, lineNo);
  return [cmd, flags, trimGoSpace(args)];
}

/** Leading `--name[=value]` words (quotes and escapes processed); `--` ends them. */
function extractBuilderFlags(line: string, escapeToken: string, _lineNo: number): [string, string[]] {
  const chars = Array.from(line);
  const words: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = '';
  let blankOK = false;
  let offset = 0; // UTF-16 offset of chars[pos]
  for (let pos = 0; pos <= chars.length; pos++) {
    const atEnd = pos === chars.length;
    const ch = atEnd ? '' : chars[pos]!;
    if (phase === 'spaces') {
      if (atEnd) break;
      if (isGoSpace(ch)) {
        offset += ch.length;
        continue;
      }
      if (ch !== '-' || chars[pos + 1] !== '-') return [line.slice(offset), words];
      phase = 'word';
    }
    if (atEnd) {
      if (word !== '--' && (blankOK || word.length > 0)) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (isGoSpace(ch)) {
        phase = 'spaces';
        if (word === '--') return [line.slice(offset), words];
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        offset += ch.length;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
        offset += ch.length;
        continue;
      }
      let c = ch;
      if (c === escapeToken) {
        if (pos + 1 === chars.length) {
          offset += ch.length;
          continue; // a trailing escape is dropped
        }
        offset += ch.length;
        pos++;
        c = chars[pos]!;
      }
      word += c;
      offset += c.length;
      continue;
    }
    // in quotes
    if (ch === quote) {
      phase = 'word';
      offset += ch.length;
      continue;
    }
    let c = ch;
    if (c === escapeToken) {
      if (pos + 1 === chars.length) {
        phase = 'word';
        offset += ch.length;
        continue;
      }
      offset += ch.length;
      pos++;
      c = chars[pos]!;
    }
    word += c;
    offset += c.length;
  }
  return ['', words];
}

function nodeFromLine(line: string, escapeToken: string, startLine: number, endLine: number): Node {
  const [keyword, flags, rest] = splitCommand(line, escapeToken, startLine);
  const cmd = keyword.toLowerCase();
  const node: Node = { keyword, cmd, flags, args: [], json: false, original: line, heredocs: [], startLine, endLine };
  const fail = (msg: string) => dfError(msg, startLine);
  switch (cmd) {
    case 'add':
    case 'copy':
    case 'volume':
      Object.assign(node, maybeJSONToList(rest, fail));
      break;
    case 'cmd':
    case 'entrypoint':
    case 'run':
    case 'shell':
      Object.assign(node, maybeJSON(rest, fail));
      break;
    case 'arg':
      node.args = parseWords(rest, escapeToken);
      break;
    case 'env':
    case 'label':
      node.args = parseNameVal(rest, cmd === 'env' ? 'ENV' : 'LABEL', escapeToken, fail);
      break;
    case 'expose':
    case 'from':
      node.args = rest === '' ? [] : rest.split(RE_WHITESPACE);
      break;
    case 'healthcheck': {
      // the type is the first run of non-space characters
      let sep = 0;
      while (sep < rest.length && !isGoSpace(rest[sep]!)) sep++;
      let next = sep;
      while (next < rest.length && isGoSpace(rest[next]!)) next++;
      if (sep === 0) break;
      const cmdPart = maybeJSON(rest.slice(next), fail);
      node.args = [rest.slice(0, sep), ...cmdPart.args];
      node.json = cmdPart.json;
      break;
    }
    case 'maintainer':
    case 'stopsignal':
    case 'user':
    case 'workdir':
      node.args = rest === '' ? [] : [rest];
      break;
    case 'onbuild':
      if (rest !== '') {
        const child = nodeFromLine(rest, escapeToken, startLine, endLine);
        node.child = child;
        node.args = [child.keyword, ...child.args];
      }
      break;
    default:
      // unknown instructions are reported when the nodes become instructions
      break;
  }
  return node;
}

class NotStringArray extends Error {}

/** A JSON array of strings, or undefined when the text is not a JSON array at all. */
function parseJSONArray(rest: string): string[] | undefined {
  const s = trimLeftGoSpace(rest);
  if (!s.startsWith('[')) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(s);
  } catch {
    return undefined;
  }
  if (!Array.isArray(parsed)) return undefined;
  for (const item of parsed) if (typeof item !== 'string') throw new NotStringArray();
  return parsed as string[];
}

function maybeJSON(rest: string, fail: (m: string) => Error): { args: string[]; json: boolean } {
  if (rest === '') return { args: [], json: false };
  try {
    const arr = parseJSONArray(rest);
    if (arr) return { args: arr, json: true };
  } catch (err) {
    if (err instanceof NotStringArray) throw fail('when using JSON array syntax, arrays must be comprised of strings only');
    throw err;
  }
  return { args: [rest], json: false };
}

function maybeJSONToList(rest: string, fail: (m: string) => Error): { args: string[]; json: boolean } {
  try {
    const arr = parseJSONArray(rest);
    if (arr) return { args: arr, json: true };
  } catch (err) {
    if (err instanceof NotStringArray) throw fail('when using JSON array syntax, arrays must be comprised of strings only');
    throw err;
  }
  return { args: rest === '' ? [] : rest.split(RE_WHITESPACE), json: false };
}

/**
 * Words separated by spaces, quotes and escapes kept as written (they are processed later,
 * when variables are expanded).
 */
export function parseWords(rest: string, escapeToken: string): string[] {
  const chars = Array.from(rest);
  const words: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let quote = '';
  let blankOK = false;
  let word = '';
  for (let pos = 0; pos <= chars.length; pos++) {
    const atEnd = pos === chars.length;
    let ch = atEnd ? '' : chars[pos]!;
    if (phase === 'spaces') {
      if (atEnd) break;
      if (isGoSpace(ch)) continue;
      phase = 'word';
    }
    if (atEnd) {
      if (blankOK || word.length > 0) words.push(word);
      break;
    }
    if (phase === 'word') {
      if (isGoSpace(ch)) {
        phase = 'spaces';
        if (blankOK || word.length > 0) words.push(word);
        word = '';
        blankOK = false;
        continue;
      }
      if (ch === "'" || ch === '"') {
        quote = ch;
        blankOK = true;
        phase = 'quote';
      }
      if (ch === escapeToken) {
        if (pos + 1 === chars.length) continue;
        word += ch;
        pos++;
        ch = chars[pos]!;
      }
      word += ch;
      continue;
    }
    // in quotes
    if (ch === quote) phase = 'word';
    if (ch === escapeToken && quote !== "'") {
      if (pos + 1 === chars.length) {
        phase = 'word';
        continue;
      }
      pos++;
      word += ch;
      ch = chars[pos]!;
    }
    word += ch;
  }
  return words;
}

/** ENV / LABEL: `K=V K2=V2 ...` or the legacy `K V` form, as key,value,separator triples. */
function parseNameVal(rest: string, key: string, escapeToken: string, fail: (m: string) => Error): string[] {
  const words = parseWords(rest, escapeToken);
  if (words.length === 0) return [];
  if (!words[0]!.includes('=')) {
    const m = RE_WHITESPACE.exec(rest);
    if (!m) throw fail(`${key} must have two arguments`);
    return [rest.slice(0, m.index), rest.slice(m.index + m[0].length), ''];
  }
  const out: string[] = [];
  for (const word of words) {
    const eq = word.indexOf('=');
    if (eq < 0) throw fail(`Syntax error - can't find = in ${goQuote(word)}. Must be of the form: name=value`);
    out.push(word.slice(0, eq), word.slice(eq + 1), '=');
  }
  return out;
}

/** The heredoc named by one word (`<<EOF`, `<<-"EOF"`, `3<<EOF`), if it is one. */
export function parseHeredoc(src: string): Heredoc | undefined {
  const m = RE_HEREDOC.exec(src);
  if (!m) return undefined;
  const fd = m[1] ? Number.parseInt(m[1], 10) : 0;
  const chomp = m[2] === '-';
  const rest = m[3]!;
  if (rest.length === 0) return undefined;
  const plain = new ShellLex('\\', { skipUnsetEnv: true });
  const words = plain.processWords(rest, EMPTY_ENV);
  if (words.length !== 1) return undefined;
  const wordsRaw = plain.with({ rawQuotes: true }).processWords(rest, EMPTY_ENV);
  if (wordsRaw.length !== words.length) throw new Error(`internal lexing of heredoc produced inconsistent results: ${rest}`);
  const count = (w: string) => (w.match(/['"]/g) ?? []).length;
  const word = words[0]!;
  return { name: word, fileDescriptor: fd, expand: count(word) === count(wordsRaw[0]!), chomp, content: '' };
}

function heredocsFromLine(line: string, startLine: number, _endLine: number): Heredoc[] {
  const lex = new ShellLex('\\', { rawQuotes: true, rawEscapes: true, skipUnsetEnv: true });
  let words: string[];
  try {
    words = lex.processWords(line, EMPTY_ENV);
  } catch {
    words = [];
  }
  const docs: Heredoc[] = [];
  for (const w of words) {
    let h: Heredoc | undefined;
    try {
      h = parseHeredoc(w);
    } catch (err) {
      throw dfError((err as Error).message, startLine);
    }
    if (h) docs.push(h);
  }
  return docs;
}

/** Strips leading tabs from every line of a heredoc body (`<<-`). */
export function chompHeredocContent(src: string): string {
  return src.replace(/^\t+/gm, '');
}
