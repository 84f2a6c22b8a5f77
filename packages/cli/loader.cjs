#!/bin/sh
':' /*
# The `mybuild` command: this file is both a shell script and the CLI's JavaScript entry. Run
# as a command, the shell runs these lines (JavaScript sees a string and a comment): Node 20
# reads NODE_EXTRA_CA_CERTS as it starts and builds its whole CA store then, 30-50 ms on every
# command; moved to MYBUILD_NODE_EXTRA_CA_CERTS, it is put back and trusted by mybuild itself,
# only when it opens a TLS connection (src/extraca.ts). Not with --use-openssl-ca, where
# Node's store is OpenSSL's and not the one mybuild would make. `node mybuild.cjs` starts here
# too: Node reads the variable itself then.
case ${NODE_EXTRA_CA_CERTS:+set}:${NODE_OPTIONS-} in
  set:*openssl-ca*) ;;
  set:*)
    MYBUILD_NODE_EXTRA_CA_CERTS=$NODE_EXTRA_CA_CERTS
    export MYBUILD_NODE_EXTRA_CA_CERTS
    unset NODE_EXTRA_CA_CERTS
    ;;
esac
exec node "$0" "$@"
*/
// The `mybuild` executable (copied to dist/mybuild.cjs by build.mjs). Node runs the bundled CLI,
// dist/mybuild.bundle.cjs, compiled with V8's code cache when one is at hand: every command
// otherwise spends 10-45 ms compiling its JavaScript again (Node 20 has no module compile
// cache). The cache of a command is what V8 compiled during its first run, kept per user in
// $XDG_CACHE_HOME/mybuild/code (default ~/.cache/mybuild/code), a directory only that user may
// write, nor any directory above it (checked on every run by src/cachedir.ts, built beside this
// as dist/cachedir.cjs: compiled code is trusted like the bundle itself); a file is named after the bundle's identity (size, times, device and inode),
// the Node version and the command, so a rebuilt bundle or another Node never meets an old
// cache (V8 also refuses one made by another version or other flags, and then it is made
// again). MYBUILD_CODE_CACHE=0 turns it off.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');
const Module = require('node:module');

const bundle = path.join(__dirname, 'mybuild.bundle.cjs');
const source = fs.readFileSync(bundle, 'utf8');

/** The first word of the command line that is not a global option or its value. */
function commandName(argv) {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--root' || a === '--progress' || a === '--insecure-registry') i++;
    else if (!a.startsWith('-')) return /^[a-z]{1,16}$/.test(a) ? a : 'other';
  }
  return 'none';
}

const MAGIC = 'MBC1';
const HEADER = 8;

const uid = typeof process.getuid === 'function' ? process.getuid() : -1;

/** The code cache directory in this user's cache directory (src/cachedir.ts: its trust rules); undefined when not safe or not wanted. */
function cacheDir() {
  if (process.env.MYBUILD_CODE_CACHE === '0') return undefined;
  const base = require('./cachedir.cjs').userCacheDir(process.env);
  if (base === undefined) return undefined;
  const dir = path.join(base, 'code');
  try {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = fs.lstatSync(dir);
    return st.isDirectory() && st.uid === uid && (st.mode & 0o077) === 0 ? dir : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The cache file's content, when it is a regular file of this user's that only this user may
 * write: V8's data, after our 8-byte header ("MBC1", then how long the run that made it took, in
 * ms, uint32 LE).
 */
function readCache(file) {
  let fd;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const st = fs.fstatSync(fd);
    if (!st.isFile() || st.uid !== uid || (st.mode & 0o022) !== 0 || st.size > 64 << 20) return undefined;
    const bytes = fs.readFileSync(fd);
    if (bytes.length <= HEADER || bytes.toString('latin1', 0, 4) !== MAGIC) return undefined;
    return { data: bytes.subarray(HEADER), madeInMs: bytes.readUInt32LE(4) };
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** Every rebuilt bundle starts new files: keep the newest MAX_FILES, and no leftover tmp file older than an hour. */
const MAX_FILES = 48;
function prune(dir) {
  const names = fs.readdirSync(dir);
  for (const n of names.filter((x) => x.endsWith('.tmp'))) {
    const p = path.join(dir, n);
    if (Date.now() - fs.lstatSync(p).mtimeMs > 3600e3) fs.unlinkSync(p);
  }
  const caches = names.filter((n) => n.endsWith('.v8'));
  if (caches.length <= MAX_FILES) return;
  const aged = caches.map((n) => ({ n, t: fs.lstatSync(path.join(dir, n)).mtimeMs })).sort((a, b) => b.t - a.t);
  for (const { n } of aged.slice(MAX_FILES)) fs.unlinkSync(path.join(dir, n));
}

/** A run this long (ms) has compiled most of what its command needs. */
const LONG_RUN_MS = 500;

let cacheFile;
let cached;
const dir = cacheDir();
if (dir !== undefined) {
  // V8 checks only the source's length against a cache: the file's identity and every change
  // to it (ctime moves on any write, and cannot be set back) are in the name.
  const st = fs.statSync(bundle);
  const id = [st.size, Math.trunc(st.mtimeMs), Math.trunc(st.ctimeMs), st.dev, st.ino, process.version, process.arch, commandName(process.argv.slice(2))].join('-');
  cacheFile = path.join(dir, `${id}.v8`);
  cached = readCache(cacheFile);
}

const script = new vm.Script(Module.wrap(source), { filename: bundle, ...(cached ? { cachedData: cached.data } : {}) });
if (cacheFile !== undefined) {
  // At exit V8 has compiled what this command needed: keep that for its next run. A cache made
  // by a short run (a fully cached build) lacks what a longer one (a build that runs its steps)
  // compiles: a run of half a second or more, and at least three times as long as the run that
  // made the cache (or 2 s), makes it again (7 ms for this bundle), and replaces the cache with
  // it when that was made by a short run, or when it is a tenth larger. Runs of much the same
  // length do not pay those 7 ms every time. A failed run's cache counts as a short run's: its
  // length says little about what it compiled (a registry that did not answer for 30 s).
  const fresh = cached === undefined || script.cachedDataRejected;
  process.once('exit', (code) => {
    const ms = Math.round(process.uptime() * 1000);
    if (!fresh && (ms < LONG_RUN_MS || ms < Math.min(3 * cached.madeInMs, 2000))) return;
    const tmp = `${cacheFile}.${process.pid}.tmp`;
    try {
      const data = script.createCachedData();
      if (!fresh && cached.madeInMs >= LONG_RUN_MS && data.length < cached.data.length * 1.1) return;
      const header = Buffer.alloc(HEADER);
      header.write(MAGIC, 0, 'latin1');
      header.writeUInt32LE(code === 0 ? Math.min(ms, 0xffffffff) : 0, 4);
      fs.writeFileSync(tmp, Buffer.concat([header, data]), { mode: 0o600, flag: 'wx' }); // never through a link planted there
      fs.renameSync(tmp, cacheFile);
      prune(path.dirname(cacheFile));
    } catch {
      try {
        fs.unlinkSync(tmp);
      } catch {
        // nothing written
      }
    }
  });
}
const mod = new Module(bundle, module);
mod.filename = bundle;
script.runInThisContext()(mod.exports, Module.createRequire(bundle), mod, bundle, __dirname);
