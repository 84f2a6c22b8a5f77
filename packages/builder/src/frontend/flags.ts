/** Instruction flags (`--name=value`), parsed like BuildKit's BFlags. */
import { dfError } from './errors.js';
import { suggest } from './errors.js';

type FlagType = 'bool' | 'string' | 'strings';

export interface FlagSpec {
  [name: string]: FlagType;
}

export interface ParsedFlags {
  /** Last value of string flags; "true"/"false" for bool flags (only when given). */
  values: Map<string, string>;
  /** Every value of repeatable flags, in order. */
  lists: Map<string, string[]>;
  /** Names of the flags that were given. */
  used: Set<string>;
}

export function parseFlags(args: readonly string[], spec: FlagSpec, line: number): ParsedFlags {
  const out: ParsedFlags = { values: new Map(), lists: new Map(), used: new Set() };
  for (const a of args) {
    if (a === '--') break;
    if (!a.startsWith('--')) throw dfError(`arg should start with -- : ${a}`, line);
    const eq = a.indexOf('=');
    const flagName = eq < 0 ? a : a.slice(0, eq);
    const value = eq < 0 ? '' : a.slice(eq + 1);
    const hasValue = eq >= 0;
    const name = flagName.slice(2);
    const type = Object.hasOwn(spec, name) ? spec[name] : undefined;
    if (type === undefined) {
      const m = suggest(name, Object.keys(spec), true);
      const known = Object.keys(spec);
      throw dfError(
        `unknown flag: ${flagName}`,
        line,
        m ? `did you mean --${m}?` : known.length ? `accepted flags: ${known.map((k) => '--' + k).join(', ')}` : 'this instruction takes no flags',
      );
    }
    if (out.used.has(name) && type !== 'strings') throw dfError(`duplicate flag specified: ${flagName}`, line);
    out.used.add(name);
    switch (type) {
      case 'bool': {
        if (hasValue && value === '') throw dfError(`missing a value on flag: ${flagName}`, line);
        const v = value.toLowerCase();
        if (v === 'true' || v === '') out.values.set(name, 'true');
        else if (v === 'false') out.values.set(name, 'false');
        else throw dfError(`expecting boolean value for flag ${flagName}, not: ${value}`, line);
        break;
      }
      case 'string':
        if (!hasValue) throw dfError(`missing a value on flag: ${flagName}`, line);
        out.values.set(name, value);
        break;
      case 'strings': {
        if (!hasValue) throw dfError(`missing a value on flag: ${flagName}`, line);
        const list = out.lists.get(name) ?? [];
        list.push(value);
        out.lists.set(name, list);
        break;
      }
    }
  }
  return out;
}
