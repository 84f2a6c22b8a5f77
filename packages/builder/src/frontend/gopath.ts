/** Go's path.Clean / path.Join (slash-separated, lexical), which differ from node:path.posix in details. */

/** path.Clean: the shortest equivalent path; "" becomes ".", a trailing slash is dropped. */
export function goClean(p: string): string {
  if (p === '') return '.';
  const rooted = p.startsWith('/');
  const parts: string[] = [];
  for (const seg of p.split('/')) {
    if (seg === '' || seg === '.') continue;
    if (seg === '..') {
      if (parts.length > 0 && parts[parts.length - 1] !== '..') parts.pop();
      else if (!rooted) parts.push('..');
      continue;
    }
    parts.push(seg);
  }
  const out = (rooted ? '/' : '') + parts.join('/');
  return out === '' ? '.' : out;
}

/** path.Join: joins the non-empty elements and cleans the result ("" if all are empty). */
export function goJoin(...elems: string[]): string {
  const nonEmpty = elems.filter((e) => e !== '');
  if (nonEmpty.length === 0) return '';
  return goClean(nonEmpty.join('/'));
}

/** path.Base */
export function goBase(p: string): string {
  if (p === '') return '.';
  let s = p;
  while (s.length > 0 && s.endsWith('/')) s = s.slice(0, -1);
  if (s === '') return '/';
  const i = s.lastIndexOf('/');
  return i >= 0 ? s.slice(i + 1) : s;
}

/**
 * BuildKit's system.NormalizePath for Linux: a relative `newPath` joined to `parent` and
 * cleaned (an absolute one is kept as written), with a trailing "/" (or "/.") kept when `keepSlash`.
 */
export function normalizePath(parent: string, newPath: string, keepSlash: boolean): string {
  const orig = newPath;
  let par = parent === '' ? '/' : parent;
  if (!par.startsWith('/')) par = goJoin('/', par);
  let p = newPath === '' ? par : newPath;
  // an absolute path is taken as written (BuildKit cleans only what it joins)
  if (!p.startsWith('/')) p = goJoin(par, p);
  if (keepSlash) {
    if (orig.endsWith('/') && !p.endsWith('/')) p += '/';
    else if (orig.endsWith('/.')) {
      if (p !== '/') p += '/';
      p += '.';
    }
  }
  return p;
}
