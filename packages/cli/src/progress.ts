/**
 * Progress for long work: a live line on a terminal, plain lines in CI logs,
 * JSON lines for tools. Everything goes to stderr; stdout is kept for results.
 */
import { isoTime } from '@mybuild/oci';

export type ProgressMode = 'auto' | 'plain' | 'tty' | 'rawjson' | 'quiet';

export interface ProgressEvent {
  /** what the work is about: a blob digest, an archive member, a step */
  id: string;
  action: string;
  current?: number;
  total?: number;
}

export class Progress {
  readonly mode: Exclude<ProgressMode, 'auto'>;
  #lastDraw = 0;
  #live = false;

  constructor(mode: ProgressMode, private readonly out: NodeJS.WriteStream = process.stderr) {
    this.mode = mode === 'auto' ? (out.isTTY && !process.env.CI ? 'tty' : 'plain') : mode;
  }

  /** A step finished or a notable thing happened. */
  done(e: ProgressEvent): void {
    if (this.mode === 'quiet') return;
    if (this.mode === 'rawjson') {
      this.out.write(`${JSON.stringify({ ...e, time: isoTime() })}\n`);
      return;
    }
    this.#clear();
    this.out.write(`${e.action} ${e.id}${e.total !== undefined ? ` ${formatBytes(e.total)}` : ''}\n`);
  }

  /** Work in progress: redrawn at most 10 times a second on a terminal, silent in plain mode. */
  update(e: ProgressEvent): void {
    if (this.mode === 'rawjson') {
      const now = Date.now();
      if (now - this.#lastDraw < 500) return;
      this.#lastDraw = now;
      this.out.write(`${JSON.stringify({ ...e, time: isoTime(now) })}\n`);
      return;
    }
    if (this.mode !== 'tty') return;
    const now = Date.now();
    if (now - this.#lastDraw < 100) return;
    this.#lastDraw = now;
    const amount = e.current !== undefined ? ` ${formatBytes(e.current)}${e.total ? ` / ${formatBytes(e.total)}` : ''}` : '';
    const line = `${e.action} ${e.id}${amount}`.slice(0, (this.out.columns ?? 100) - 1);
    this.out.write(`\r\x1b[2K${line}`);
    this.#live = true;
  }

  #clear(): void {
    if (this.#live) {
      this.out.write('\r\x1b[2K');
      this.#live = false;
    }
  }

  end(): void {
    this.#clear();
  }
}

export function formatBytes(n: number): string {
  if (n < 1000) return `${n}B`;
  const units = ['kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = -1;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)}${units[i]}`;
}

/** "2 hours ago", as docker prints CREATED. */
export function timeAgo(iso: string | undefined, now = Date.now()): string {
  if (!iso) return 'N/A';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return 'N/A';
  const s = Math.max(0, Math.round((now - t) / 1000));
  const steps: [number, string][] = [
    [60, 'second'],
    [60, 'minute'],
    [24, 'hour'],
    [7, 'day'],
    [4.35, 'week'],
    [12, 'month'],
    [Number.POSITIVE_INFINITY, 'year'],
  ];
  let v = s;
  for (const [div, unit] of steps) {
    if (v < div) {
      if (unit === 'second' && v < 1) return 'Less than a second ago';
      const n = Math.floor(v);
      return `${n} ${unit}${n === 1 ? '' : 's'} ago`;
    }
    v /= div;
  }
  return 'N/A';
}
