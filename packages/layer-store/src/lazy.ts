/**
 * Dependencies loaded on first use. zstd-napi (a native module) and tar-stream (with streamx)
 * each cost ~20 ms of start-up, node:zlib 2 ms; most commands (push, tag, images, a fully cached
 * build) never touch a tar, a gzip or a zstd frame, and a CLI pays those milliseconds on every run.
 */
import { createRequire } from 'node:module';

type ZstdNapi = typeof import('zstd-napi');
type ZstdBinding = typeof import('zstd-napi/binding.js');
type TarStream = typeof import('tar-stream');

let zstdModule: ZstdNapi | undefined;
let zstdLowLevel: ZstdBinding | undefined;
let tarModule: Promise<TarStream> | undefined;

type Zlib = typeof import('node:zlib');
let zlibModule: Zlib | undefined;

/** node:zlib (1.9 ms to load): only for gzip layers, archives and downloads. */
export function zlib(): Zlib {
  zlibModule ??= createRequire(import.meta.url)('node:zlib') as Zlib;
  return zlibModule;
}

/** zstd-napi (a native CommonJS module: required, not imported by name). */
export function zstdNapi(): ZstdNapi {
  zstdModule ??= createRequire(import.meta.url)('zstd-napi') as ZstdNapi;
  return zstdModule;
}

/** zstd-napi's low-level binding. */
export function zstdBinding(): ZstdBinding {
  zstdLowLevel ??= createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
  return zstdLowLevel;
}

/**
 * tar-stream (bundled; split into a chunk of its own by the CLI's bundler). A CommonJS module:
 * its `module.exports` is the namespace's default, under Node and in the bundle alike.
 */
export function tarStream(): Promise<TarStream> {
  tarModule ??= import('tar-stream').then((m) => (m as unknown as { default: TarStream }).default ?? m);
  return tarModule;
}
