import { MyBuildError } from '@mybuild/oci';

/**
 * An error found in Dockerfile text, located by line. The front end throws these internally
 * and turns them into MyBuildError (INVALID_ARGUMENT, where `Dockerfile:LINE`) at its public
 * entry points, where the file name is known.
 */
export class DockerfileError extends Error {
  override readonly name = 'DockerfileError';
  constructor(
    message: string,
    readonly line: number | undefined,
    readonly hint?: string,
  ) {
    super(message);
  }
}

export function dfError(message: string, line: number | undefined, hint?: string): DockerfileError {
  return new DockerfileError(message, line, hint);
}

/** Converts a DockerfileError (or rethrows anything else) into the error users see. */
export function toMyBuildError(err: unknown, fileName: string): unknown {
  if (err instanceof DockerfileError) {
    const where = err.line === undefined ? fileName : `${fileName}:${err.line}`;
    return new MyBuildError('INVALID_ARGUMENT', err.message, { where, ...(err.hint ? { hint: err.hint } : {}), cause: err });
  }
  return err;
}

/** Levenshtein distance (insertions, deletions, substitutions). */
export function editDistance(a: string, b: string): number {
  const x = Array.from(a);
  const y = Array.from(b);
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const cur = [i];
    for (let j = 1; j <= y.length; j++) {
      const cost = x[i - 1] === y[j - 1] ? 0 : 1;
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost);
    }
    prev = cur;
  }
  return prev[y.length]!;
}

/**
 * The closest option within edit distance 2 (BuildKit's suggest.Search), or undefined;
 * an exact match means the value was not the problem, so there is nothing to suggest.
 */
export function suggest(value: string, options: Iterable<string>, caseSensitive = true): string | undefined {
  const val = caseSensitive ? value : value.toLowerCase();
  let match: string | undefined;
  let min = 3;
  for (const option of options) {
    const opt = caseSensitive ? option : option.toLowerCase();
    if (opt === val) return undefined;
    const d = editDistance(val, opt);
    if (d < min) {
      min = d;
      match = caseSensitive ? opt : matchCase(opt, value);
    }
  }
  return match;
}

function matchCase(val: string, orig: string): string {
  if (orig === orig.toLowerCase()) return val.toLowerCase();
  if (orig === orig.toUpperCase()) return val.toUpperCase();
  return val;
}

export function didYouMean(value: string, options: Iterable<string>, caseSensitive = true, prefix = ''): string | undefined {
  const m = suggest(value, options, caseSensitive);
  return m === undefined ? undefined : `did you mean ${prefix}${m}?`;
}
