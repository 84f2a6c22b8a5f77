/**
 * Go formatting helpers: BuildKit writes image history with Go's fmt verbs (`%q` of a
 * []string, `%v` of a time.Duration), so reproducing `created_by` byte for byte needs them.
 */

/** Go's unicode.IsSpace. */
export function isGoSpace(ch: string): boolean {
  switch (ch) {
    case '\t':
    case '\n':
    case '\v':
    case '\f':
    case '\r':
    case ' ':
    case '\u0085':
    case '\u00a0':
      return true;
    default:
      // (ASCII first: the Unicode class compiles on first use)
      return ch.length > 0 && ch.charCodeAt(0) >= 0x80 && UNICODE_SPACE.test(ch);
  }
}

const UNICODE_SPACE = /^[\p{Zs}\u2028\u2029]$/u;

/** strings.TrimLeftFunc(s, unicode.IsSpace) */
export function trimLeftGoSpace(s: string): string {
  let i = 0;
  for (const ch of s) {
    if (!isGoSpace(ch)) break;
    i += ch.length;
  }
  return s.slice(i);
}

/** strings.TrimSpace */
export function trimGoSpace(s: string): string {
  const chars = Array.from(trimLeftGoSpace(s));
  let end = chars.length;
  while (end > 0 && isGoSpace(chars[end - 1]!)) end--;
  return chars.slice(0, end).join('');
}

const PRINTABLE = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]$/u;

/** strconv.Quote: a double-quoted Go string literal. */
export function goQuote(s: string): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    switch (ch) {
      case '"':
        out += '\\"';
        continue;
      case '\\':
        out += '\\\\';
        continue;
      case '\u0007':
        out += '\\a';
        continue;
      case '\b':
        out += '\\b';
        continue;
      case '\f':
        out += '\\f';
        continue;
      case '\n':
        out += '\\n';
        continue;
      case '\r':
        out += '\\r';
        continue;
      case '\t':
        out += '\\t';
        continue;
      case '\v':
        out += '\\v';
        continue;
    }
    if ((cp >= 0x20 && cp < 0x7f) || (cp >= 0x80 && PRINTABLE.test(ch))) {
      out += ch;
    } else if (cp < 0x20 || cp === 0x7f) {
      out += '\\x' + cp.toString(16).padStart(2, '0');
    } else if (cp >= 0xd800 && cp <= 0xdfff) {
      // a lone surrogate is invalid UTF-8 to Go: it prints the replacement character escape
      out += '\\ufffd';
    } else if (cp < 0x10000) {
      out += '\\u' + cp.toString(16).padStart(4, '0');
    } else {
      out += '\\U' + cp.toString(16).padStart(8, '0');
    }
  }
  return out + '"';
}

/** fmt.Sprintf("%q", []string{...}) → `["a" "b"]` */
export function goQuoteList(list: readonly string[]): string {
  return '[' + list.map(goQuote).join(' ') + ']';
}

/** fmt.Sprintf("%v", []string{...}) → `[a b]` */
export function goList(list: readonly string[]): string {
  return '[' + list.join(' ') + ']';
}

const NS = 1n;
const US = 1000n * NS;
const MS = 1000n * US;
const SEC = 1000n * MS;
const MIN = 60n * SEC;
const HOUR = 60n * MIN;

/** time.Duration.String() for a duration in nanoseconds. */
export function goDuration(nanoseconds: number | bigint): string {
  let u = BigInt(nanoseconds);
  const neg = u < 0n;
  if (neg) u = -u;
  let out: string;
  if (u < SEC) {
    if (u === 0n) return '0s';
    if (u < US) out = `${u}ns`;
    else if (u < MS) out = fmtFrac(u, 3) + 'µs';
    else out = fmtFrac(u, 6) + 'ms';
  } else {
    const frac = u % SEC;
    let secs = u / SEC;
    let s = fracDigits(frac, 9);
    s = `${secs % 60n}${s}s`;
    secs /= 60n;
    if (secs > 0n) {
      s = `${secs % 60n}m${s}`;
      secs /= 60n;
      if (secs > 0n) s = `${secs}h${s}`;
    }
    out = s;
  }
  return neg ? '-' + out : out;
}

function fmtFrac(v: bigint, prec: number): string {
  const scale = 10n ** BigInt(prec);
  return `${v / scale}${fracDigits(v % scale, prec)}`;
}

function fracDigits(frac: bigint, prec: number): string {
  if (frac === 0n) return '';
  const digits = frac.toString().padStart(prec, '0').replace(/0+$/, '');
  return '.' + digits;
}

const UNITS: Record<string, bigint> = {
  ns: NS,
  us: US,
  'µs': US, // U+00B5
  'μs': US, // U+03BC
  ms: MS,
  s: SEC,
  m: MIN,
  h: HOUR,
};

/** time.ParseDuration; returns nanoseconds or throws an Error with Go's message. */
export function parseGoDuration(input: string): bigint {
  const quoted = goQuote(input);
  let s = input;
  let neg = false;
  if (s !== '' && (s[0] === '-' || s[0] === '+')) {
    neg = s[0] === '-';
    s = s.slice(1);
  }
  if (s === '0') return 0n;
  if (s === '') throw new Error(`time: invalid duration ${quoted}`);
  let total = 0n;
  while (s !== '') {
    if (!(s[0] === '.' || (s[0]! >= '0' && s[0]! <= '9'))) throw new Error(`time: invalid duration ${quoted}`);
    const m = /^(\d*)(?:\.(\d*))?/.exec(s)!;
    const intPart = m[1] ?? '';
    const fracPart = m[2];
    if (intPart === '' && (fracPart === undefined || fracPart === '')) throw new Error(`time: invalid duration ${quoted}`);
    s = s.slice(m[0].length);
    let i = 0;
    while (i < s.length && s[i] !== '.' && !(s[i]! >= '0' && s[i]! <= '9')) i++;
    const unitName = s.slice(0, i);
    s = s.slice(i);
    if (unitName === '') throw new Error(`time: missing unit in duration ${quoted}`);
    const unit = UNITS[unitName];
    if (unit === undefined) throw new Error(`time: unknown unit ${goQuote(unitName)} in duration ${quoted}`);
    let v = BigInt(intPart === '' ? '0' : intPart) * unit;
    if (fracPart) {
      v += (BigInt(fracPart) * unit) / 10n ** BigInt(fracPart.length);
    }
    total += v;
    if (total > 9223372036854775807n) throw new Error(`time: invalid duration ${quoted}`);
  }
  return neg ? -total : total;
}
