import { StringDecoder } from 'node:string_decoder';

/** Lines kept for error messages. */
export const TAIL_LINES = 20;
/** A kept line longer than this is cut (an error message must stay readable). */
const MAX_LINE = 1000;

/** The last lines of a step's output (stdout and stderr as they arrive), for its error. */
export class OutputTail {
  readonly #lines: string[] = [];
  #partial = '';
  readonly #max: number;
  readonly #decoder = new StringDecoder('utf8');

  constructor(max = TAIL_LINES) {
    this.#max = max;
  }

  push(chunk: Buffer): void {
    const text = this.#partial + this.#decoder.write(chunk);
    const parts = text.split('\n');
    this.#partial = cut(parts.pop()!);
    for (const p of parts) this.#add(p);
  }

  /** The kept lines, with an unterminated last line. */
  lines(): string[] {
    return this.#partial === '' ? [...this.#lines] : [...this.#lines, this.#partial].slice(-this.#max);
  }

  #add(line: string): void {
    this.#lines.push(cut(line.replace(/\r$/, '')));
    if (this.#lines.length > this.#max) this.#lines.shift();
  }
}

function cut(line: string): string {
  return line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)}…` : line;
}

/** How runc 1.1 starts the error it prints on stderr when it fails (not the container). */
export const RUNC_ERROR_PREFIX = 'runc run failed: ';
const PREFIX = Buffer.from(RUNC_ERROR_PREFIX);
const MAX_HELD = 64 << 10;

/**
 * runc prints its own failure on the stderr it shares with the container. This passes the
 * container's bytes straight through and holds back only lines that start like runc's
 * failure; {@link end} drops them when runc did fail (the sandbox reports that itself) and
 * releases them otherwise.
 */
export class RuncLineFilter {
  #lineStart = true;
  /** An unterminated line that may still turn out to be runc's. */
  #partial: Buffer = Buffer.alloc(0);
  readonly #held: Buffer[] = [];

  /** Returns what can be forwarded now. */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    const data = this.#partial.length > 0 ? Buffer.concat([this.#partial, chunk]) : chunk;
    this.#partial = Buffer.alloc(0);
    let pos = 0;
    while (pos < data.length) {
      const nl = data.indexOf(10, pos);
      const end = nl < 0 ? data.length : nl + 1;
      const piece = data.subarray(pos, end);
      pos = end;
      if (this.#lineStart && mayBeRunc(piece, nl >= 0)) {
        if (nl >= 0) this.#held.push(piece);
        else if (piece.length <= MAX_HELD) this.#partial = Buffer.from(piece);
        else {
          out.push(piece);
          this.#lineStart = false;
        }
        continue;
      }
      out.push(piece);
      this.#lineStart = nl >= 0;
    }
    return out;
  }

  /** The held-back bytes to forward: none when `runcFailed`. */
  end(runcFailed: boolean): Buffer[] {
    const rest = this.#partial.length > 0 ? [...this.#held, this.#partial] : [...this.#held];
    this.#held.length = 0;
    this.#partial = Buffer.alloc(0);
    return runcFailed ? [] : rest;
  }
}

function mayBeRunc(piece: Buffer, complete: boolean): boolean {
  const n = Math.min(piece.length, PREFIX.length);
  if (piece.subarray(0, n).compare(PREFIX.subarray(0, n)) !== 0) return false;
  return !complete || piece.length >= PREFIX.length;
}
