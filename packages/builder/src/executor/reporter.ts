/** Progress vertices (BuildKit's model), as events for {@link BuildOptions.onEvent}. */
import { Writable } from 'node:stream';
import type { BuildEvent } from './types.js';

export class Reporter {
  readonly #emit: (e: BuildEvent) => void;
  #next = 1;

  constructor(onEvent: ((e: BuildEvent) => void) | undefined) {
    this.#emit = (e) => {
      try {
        onEvent?.(e);
      } catch {
        // a broken renderer must not break the build
      }
    };
  }

  vertex(name: string): Vertex {
    const id = this.#next++;
    this.#emit({ type: 'vertex', id, name });
    return new Vertex(id, this.#emit);
  }

  warning(message: string, where?: string): void {
    this.#emit({ type: 'warning', message, ...(where !== undefined ? { where } : {}) });
  }
}

export class Vertex {
  #ended = false;

  constructor(
    readonly id: number,
    readonly emit: (e: BuildEvent) => void,
  ) {}

  status(text: string): void {
    if (!this.#ended) this.emit({ type: 'status', id: this.id, text });
  }

  /** A sink for a process's output on `stream`. */
  output(stream: 'stdout' | 'stderr'): Writable {
    return new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        if (!this.#ended) this.emit({ type: 'log', id: this.id, stream, data: Buffer.from(chunk) });
        cb();
      },
    });
  }

  done(): void {
    this.#end({ type: 'done', id: this.id });
  }

  cached(): void {
    this.#end({ type: 'done', id: this.id, cached: true });
  }

  /** Stopped because another part of the build failed (or the build was interrupted). */
  canceled(): void {
    this.#end({ type: 'done', id: this.id, canceled: true });
  }

  fail(message: string): void {
    this.#end({ type: 'done', id: this.id, error: message });
  }

  get ended(): boolean {
    return this.#ended;
  }

  #end(e: BuildEvent): void {
    if (this.#ended) return;
    this.#ended = true;
    this.emit(e);
  }
}
