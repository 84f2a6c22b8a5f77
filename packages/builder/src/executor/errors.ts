import { MyBuildError, type ErrorCode } from '@mybuild/oci';

/**
 * A step of the Dockerfile failed: located (`Dockerfile:12`), naming the instruction, with the
 * last lines the step printed (for a RUN) so the one error line can be read on its own.
 */
export class BuildStepError extends MyBuildError {
  override readonly name = 'BuildStepError';
  /** The progress name of the step (`[2/5] RUN make`). */
  readonly step: string;
  readonly lastLines: string[];
  readonly exitCode: number | undefined;
  /** The failure without the instruction in front (what the step's progress line shows). */
  readonly detail: string;

  constructor(code: ErrorCode, message: string, opts: { where: string; step: string; hint?: string; lastLines?: string[]; exitCode?: number; cause?: unknown; detail?: string }) {
    super(code, message, { where: opts.where, ...(opts.hint ? { hint: opts.hint } : {}), ...(opts.cause !== undefined ? { cause: opts.cause } : {}) });
    this.step = opts.step;
    this.detail = opts.detail ?? message;
    this.lastLines = opts.lastLines ?? [];
    this.exitCode = opts.exitCode;
  }
}

/** The instruction as one short line for messages. */
export function shortInstruction(original: string, max = 80): string {
  const s = original.replace(/\s+/g, ' ').trim();
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}
