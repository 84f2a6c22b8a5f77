/**
 * Renders build events as BuildKit's progress does: `plain` (CI logs: one line per event,
 * `#N` prefixes, step output with its time offset, `DONE 0.3s` / `CACHED` / `ERROR: ...`),
 * `tty` (a live view: finished steps stay, running ones are redrawn with their last output
 * lines), `rawjson` (one JSON object per event) or `quiet`.
 */
import { isoTime } from '@mybuild/oci';
import type { BuildEvent } from './types.js';
import { nowMs } from '../clock.js';

export type ProgressUiMode = 'plain' | 'tty' | 'rawjson' | 'quiet';

export interface ProgressPrinter {
  onEvent(e: BuildEvent): void;
  /** Stop redrawing; print what is left. */
  end(): void;
  /** BuildKit's closing block for a failed step: its name and last output lines. */
  failure(step: string, lastLines: string[]): void;
}

interface VertexState {
  id: number;
  name: string;
  start: number;
  end?: number;
  cached?: boolean;
  canceled?: boolean;
  error?: string;
  /** partial line per stream */
  partial: { stdout: string; stderr: string };
  /** last lines, for the live view */
  tail: string[];
}

const TTY_TAIL = 6;

export function createProgressPrinter(mode: ProgressUiMode, out: NodeJS.WritableStream & { columns?: number; rows?: number } = process.stderr): ProgressPrinter {
  if (mode === 'quiet') return { onEvent: () => {}, end: () => {}, failure: () => {} };
  if (mode === 'rawjson') {
    return {
      onEvent: (e) => {
        const base = { time: isoTime() };
        if (e.type === 'log') out.write(`${JSON.stringify({ ...base, type: 'log', vertex: e.id, stream: e.stream, data: e.data.toString('utf8') })}\n`);
        else if (e.type === 'warning') out.write(`${JSON.stringify({ ...base, ...e })}\n`);
        else out.write(`${JSON.stringify({ ...base, ...e, vertex: e.id, id: undefined })}\n`);
      },
      end: () => {},
      failure: () => {},
    };
  }
  return mode === 'tty' ? new TtyPrinter(out) : new PlainPrinter(out);
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}

class PlainPrinter implements ProgressPrinter {
  readonly #out: NodeJS.WritableStream;
  readonly #vertices = new Map<number, VertexState>();

  constructor(out: NodeJS.WritableStream) {
    this.#out = out;
  }

  onEvent(e: BuildEvent): void {
    const now = nowMs();
    switch (e.type) {
      case 'vertex':
        this.#vertices.set(e.id, { id: e.id, name: e.name, start: now, partial: { stdout: '', stderr: '' }, tail: [] });
        this.#out.write(`#${e.id} ${e.name}\n`);
        break;
      case 'status':
        this.#out.write(`#${e.id} ${e.text}\n`);
        break;
      case 'log': {
        const v = this.#vertices.get(e.id);
        if (!v) return;
        const offset = seconds(now - v.start).padStart(5);
        const text = v.partial[e.stream] + e.data.toString('utf8');
        const lines = text.split('\n');
        v.partial[e.stream] = lines.pop()!;
        for (const l of lines) this.#out.write(`#${e.id} ${offset} ${l}\n`);
        break;
      }
      case 'done': {
        const v = this.#vertices.get(e.id);
        if (!v) return;
        for (const s of ['stdout', 'stderr'] as const) {
          if (v.partial[s] !== '') this.#out.write(`#${e.id} ${seconds(now - v.start).padStart(5)} ${v.partial[s]}\n`);
          v.partial[s] = '';
        }
        if (e.canceled) this.#out.write(`#${e.id} CANCELED\n\n`);
        else if (e.error !== undefined) this.#out.write(`#${e.id} ERROR: ${e.error}\n\n`);
        else if (e.cached) this.#out.write(`#${e.id} CACHED\n\n`);
        else this.#out.write(`#${e.id} DONE ${seconds(now - v.start)}s\n\n`);
        break;
      }
      case 'warning':
        this.#out.write(`WARNING: ${e.message}${e.where ? ` (${e.where})` : ''}\n`);
        break;
    }
  }

  end(): void {}

  failure(step: string, lastLines: string[]): void {
    writeFailure(this.#out, step, lastLines);
  }
}

function writeFailure(out: NodeJS.WritableStream, step: string, lastLines: string[]): void {
  out.write(`------\n > ${step}:\n`);
  for (const l of lastLines) out.write(`${l}\n`);
  out.write('------\n');
}

class TtyPrinter implements ProgressPrinter {
  readonly #out: NodeJS.WritableStream & { columns?: number; rows?: number };
  readonly #vertices = new Map<number, VertexState>();
  readonly #start = nowMs();
  #drawn = 0;
  #timer: NodeJS.Timeout | undefined;
  #warnings: string[] = [];

  constructor(out: NodeJS.WritableStream & { columns?: number; rows?: number }) {
    this.#out = out;
    this.#timer = setInterval(() => this.#draw(), 100);
    this.#timer.unref();
  }

  onEvent(e: BuildEvent): void {
    const now = nowMs();
    switch (e.type) {
      case 'vertex':
        this.#vertices.set(e.id, { id: e.id, name: e.name, start: now, partial: { stdout: '', stderr: '' }, tail: [] });
        break;
      case 'status': {
        const v = this.#vertices.get(e.id);
        if (v) pushTail(v, e.text);
        break;
      }
      case 'log': {
        const v = this.#vertices.get(e.id);
        if (!v) return;
        const lines = (v.partial[e.stream] + e.data.toString('utf8')).split('\n');
        v.partial[e.stream] = lines.pop()!;
        for (const l of lines) pushTail(v, l);
        break;
      }
      case 'done': {
        const v = this.#vertices.get(e.id);
        if (!v) return;
        v.end = now;
        if (e.cached) v.cached = true;
        if (e.canceled) v.canceled = true;
        if (e.error !== undefined) v.error = e.error;
        this.#draw();
        break;
      }
      case 'warning':
        this.#warnings.push(`WARNING: ${e.message}${e.where ? ` (${e.where})` : ''}`);
        break;
    }
  }

  #line(v: VertexState, now: number): string {
    const width = Math.max(40, (this.#out.columns ?? 100) - 1);
    const status = v.error !== undefined ? 'ERROR' : v.canceled ? 'CANCELED' : v.cached ? 'CACHED' : `${seconds((v.end ?? now) - v.start)}s`;
    const head = `${v.end === undefined ? '=>' : '=>'} ${v.name}`;
    const room = width - status.length - 1;
    const left = head.length > room ? `${head.slice(0, room - 1)}…` : head.padEnd(room);
    return `${left} ${status}`;
  }

  #draw(final = false): void {
    const now = nowMs();
    const width = Math.max(40, (this.#out.columns ?? 100) - 1);
    let text = this.#drawn > 0 ? `\x1b[${this.#drawn}F\x1b[J` : '';
    // finished vertices are printed once and scroll away
    for (const [id, v] of this.#vertices) {
      if (v.end === undefined) break;
      text += `${this.#line(v, now)}\n`;
      if (v.error !== undefined) for (const l of v.tail) text += `\x1b[2m${l.slice(0, width)}\x1b[0m\n`;
      this.#vertices.delete(id);
    }
    const live: string[] = [];
    if (!final) {
      live.push(`[+] Building ${seconds(now - this.#start)}s`);
      for (const v of this.#vertices.values()) {
        live.push(this.#line(v, now));
        if (v.end === undefined) for (const l of v.tail) live.push(`\x1b[2m => ${l}`.slice(0, width + 4) + '\x1b[0m');
      }
    }
    const rows = Math.max(5, (this.#out.rows ?? 30) - 2);
    const shown = live.slice(-rows);
    for (const l of shown) text += `${l}\n`;
    this.#drawn = shown.length;
    this.#out.write(text);
  }

  end(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    for (const v of this.#vertices.values()) v.end ??= nowMs();
    this.#draw(true);
    this.#drawn = 0;
    for (const w of this.#warnings) this.#out.write(`${w}\n`);
  }

  failure(step: string, lastLines: string[]): void {
    writeFailure(this.#out, step, lastLines);
  }
}

function pushTail(v: VertexState, line: string): void {
  v.tail.push(line);
  if (v.tail.length > TTY_TAIL) v.tail.shift();
}
