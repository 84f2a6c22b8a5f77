/**
 * Timestamps as the image spec writes them (`created`: RFC 3339, UTC): exactly what
 * `new Date(ms).toISOString()` returns, made from the UTC fields instead. V8 formats a Date
 * through its date cache, whose first use in a process looks up the host's time zone in ICU's
 * data: 0.2 ms with a warm page cache, but ~17 ms when that part of the node binary has to be
 * read from disk first (a cold start), on the critical path of every store write that dates
 * itself. The UTC getters never need the time zone.
 */
export function isoTime(ms: number = Date.now()): string {
  const d = new Date(ms);
  const year = d.getUTCFullYear();
  // Outside 0000-9999 toISOString writes an expanded year (+012345); that is its business.
  if (!(year >= 0 && year <= 9999)) return d.toISOString();
  return `${pad(year, 4)}-${pad(d.getUTCMonth() + 1, 2)}-${pad(d.getUTCDate(), 2)}T${pad(d.getUTCHours(), 2)}:${pad(d.getUTCMinutes(), 2)}:${pad(d.getUTCSeconds(), 2)}.${pad(d.getUTCMilliseconds(), 3)}Z`;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}
