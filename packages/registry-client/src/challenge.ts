/** An authentication challenge of a `WWW-Authenticate` header (RFC 7235). */
export interface Challenge {
  /** Scheme in lower case: `bearer`, `basic`. */
  scheme: string;
  /** Parameters with lower-case names; quoted values unescaped. */
  params: Record<string, string>;
  token68?: string;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const TOKEN68 = /[A-Za-z0-9\-._~+/]/;

/**
 * Parse every challenge in one or more `WWW-Authenticate` values. One header may hold several
 * challenges; quoted values may hold commas and escaped quotes; scheme names are
 * case-insensitive. Malformed trailing input is ignored, never thrown on.
 */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const values = Array.isArray(header) ? header : [header];
  const out: Challenge[] = [];
  for (const v of values) out.push(...parseOne(v));
  return out;
}

function parseOne(s: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = s.length;
  const ws = () => {
    while (i < n && (s[i] === ' ' || s[i] === '\t')) i++;
  };
  const token = (re: RegExp) => {
    const start = i;
    while (i < n && re.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  const quoted = () => {
    // s[i] === '"'
    i++;
    let v = '';
    while (i < n && s[i] !== '"') {
      if (s[i] === '\\' && i + 1 < n) i++;
      v += s[i];
      i++;
    }
    i++; // closing quote (or end)
    return v;
  };
  /** Is the text at `at` a `name = value` parameter rather than the next challenge's scheme? */
  const isParamAt = (at: number) => {
    let j = at;
    while (j < n && TCHAR.test(s[j]!)) j++;
    if (j === at) return false;
    while (j < n && (s[j] === ' ' || s[j] === '\t')) j++;
    if (s[j] !== '=') return false;
    // A parameter has a value (token or quoted string); `abc==` is a token68.
    j++;
    while (j < n && (s[j] === ' ' || s[j] === '\t')) j++;
    return j < n && (s[j] === '"' || TCHAR.test(s[j]!));
  };

  while (i < n) {
    while (i < n && (s[i] === ',' || s[i] === ' ' || s[i] === '\t')) i++;
    if (i >= n) break;
    const scheme = token(TCHAR);
    if (scheme === '') {
      i++; // skip a stray character
      continue;
    }
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    out.push(challenge);
    ws();
    // token68 form: a token68 followed by end or a comma (and not by `=` of a parameter).
    if (i < n && s[i] !== ',' && !isParamAt(i)) {
      const start = i;
      const t = token(TOKEN68);
      let j = i;
      while (j < n && s[j] === '=') j++;
      const k = j;
      let m = k;
      while (m < n && (s[m] === ' ' || s[m] === '\t')) m++;
      if (t !== '' && (m >= n || s[m] === ',')) {
        challenge.token68 = s.slice(start, k);
        i = k;
        continue;
      }
      i = start;
    }
    // auth-params, separated by commas, until the next challenge's scheme.
    for (;;) {
      ws();
      if (i >= n) break;
      if (s[i] === ',') {
        let j = i;
        while (j < n && (s[j] === ',' || s[j] === ' ' || s[j] === '\t')) j++;
        if (j >= n) {
          i = j;
          break;
        }
        if (!isParamAt(j)) {
          i = j;
          break; // next challenge
        }
        i = j;
      }
      if (!isParamAt(i)) {
        // garbage: skip to the next comma
        while (i < n && s[i] !== ',') i++;
        continue;
      }
      const name = token(TCHAR).toLowerCase();
      ws();
      i++; // '='
      ws();
      const value = s[i] === '"' ? quoted() : token(TCHAR);
      challenge.params[name] = value;
    }
  }
  return out;
}
