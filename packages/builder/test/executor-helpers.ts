/**
 * What the executor tests share: a store in a temp dir with a busybox base image (made from
 * Debian's busybox-static, no network), a build runner, and a description of an image's final
 * filesystem (types, modes, owners, content hashes, link targets) read from its unpacked layers.
 */
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Descriptor, MediaType } from '@mybuild/oci';
import { OverlaySnapshotter, type Store, openStore, putJsonBlob, unpackImage } from '@mybuild/layer-store';
import { type BuildEvent, type BuildOptions, type BuildResult, build } from '@mybuild/builder';
import { busyboxConfig, busyboxRootfsLayer } from '@mybuild/fixtures/images.mjs';

export const canBuild = process.getuid?.() === 0 && existsSync('/usr/sbin/runc') && existsSync('/bin/busybox');

export interface TestStore {
  dir: string;
  store: Store;
  stateDir: string;
  cleanup(): Promise<void>;
}

/** A fresh store with `busybox:latest` in it. */
export async function testStore(prefix = 'mybuild-exec-'): Promise<TestStore> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const store = await openStore(join(dir, 'store'), { snapshotter: (paths) => new OverlaySnapshotter(paths) });
  await addBusybox(store, 'busybox:latest');
  return {
    dir,
    store,
    stateDir: join(dir, 'state'),
    cleanup: async () => {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

let busyboxLayer: Buffer | undefined;

/** Store the busybox image (one uncompressed layer) under `name`. */
export async function addBusybox(store: Store, name: string, extraConfig: Record<string, unknown> = {}): Promise<Descriptor> {
  busyboxLayer ??= Buffer.from(await busyboxRootfsLayer());
  const layer = await store.content.putBytes(busyboxLayer);
  const base = busyboxConfig();
  const config = {
    created: '1970-01-01T00:00:00Z',
    architecture: hostArch(),
    os: 'linux',
    config: { ...base.config, ...extraConfig },
    rootfs: { type: 'layers', diff_ids: [layer.digest] },
    history: [{ created: '1970-01-01T00:00:00Z', created_by: 'busybox-static rootfs' }],
  };
  const cfg = await putJsonBlob(store.content, config, MediaType.OciConfig);
  const manifest = await putJsonBlob(store.content, {
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: cfg.mediaType, digest: cfg.digest, size: cfg.size },
    layers: [{ mediaType: MediaType.OciLayer, digest: layer.digest, size: layer.size }],
  });
  await store.images.tag(name, manifest);
  return manifest;
}

function hostArch(): string {
  return process.arch === 'x64' ? 'amd64' : process.arch === 'ia32' ? '386' : process.arch;
}

export interface RunBuild extends Omit<BuildOptions, 'store'> {}

/** Build with the test store; events are collected. */
export async function runBuild(t: TestStore, opts: RunBuild): Promise<{ result: BuildResult; events: BuildEvent[] }> {
  const events: BuildEvent[] = [];
  const result = await build({ store: t.store, sandbox: { stateDir: t.stateDir }, ...opts, onEvent: (e) => events.push(e) });
  return { result, events };
}

/** Like {@link runBuild}, returning the error (and the events) of a build that must fail. */
export async function failBuild(t: TestStore, opts: RunBuild): Promise<{ error: Error; events: BuildEvent[] }> {
  const events: BuildEvent[] = [];
  try {
    await build({ store: t.store, sandbox: { stateDir: t.stateDir }, ...opts, onEvent: (e) => events.push(e) });
  } catch (err) {
    return { error: err as Error, events };
  }
  throw new Error('the build succeeded but should have failed');
}

/**
 * Set the times of everything below `dir` (symlinks aside) an hour back: older than the stat
 * cache's racy window, as a real checkout's files are.
 */
export function ageTree(dir: string): void {
  const old = Date.now() / 1000 - 3600;
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (lstatSync(p).isDirectory()) ageTree(p);
    if (!lstatSync(p).isSymbolicLink()) utimesSync(p, old, old);
  }
}

/** Unpack the image `ref` into a fresh directory; returns it. */
export async function unpackRootfs(t: TestStore, ref: string): Promise<string> {
  const img = await t.store.images.resolve(ref);
  const dir = mkdtempSync(join(t.dir, 'rootfs-'));
  await unpackImage(img.manifest.layers, t.store.content, dir, { diffIds: img.config.rootfs.diff_ids });
  return dir;
}

/** One path of an image's filesystem, as golden files spell it. */
export interface FsEntry {
  type: 'file' | 'dir' | 'symlink' | 'fifo' | 'char' | 'block' | 'socket';
  mode: string;
  owner: string;
  /** regular files: the content when it is short UTF-8 text */
  text?: string;
  /** regular files: sha256 hex of the content */
  sha256?: string;
  /** symlinks */
  target?: string;
  /** regular files with more than one link */
  nlink?: number;
}

export function describePath(root: string, path: string): FsEntry | undefined {
  const host = join(root, path);
  let st;
  try {
    st = lstatSync(host);
  } catch {
    return undefined;
  }
  const type: FsEntry['type'] = st.isFile()
    ? 'file'
    : st.isDirectory()
      ? 'dir'
      : st.isSymbolicLink()
        ? 'symlink'
        : st.isFIFO()
          ? 'fifo'
          : st.isCharacterDevice()
            ? 'char'
            : st.isBlockDevice()
              ? 'block'
              : 'socket';
  const e: FsEntry = { type, mode: `0${(st.mode & 0o7777).toString(8).padStart(3, '0')}`, owner: `${st.uid}:${st.gid}` };
  if (type === 'file') {
    const data = readFileSync(host);
    const text = data.toString('utf8');
    if (data.length <= 200 && Buffer.from(text).equals(data) && !text.includes('\u0000')) e.text = text;
    else e.sha256 = createHash('sha256').update(data).digest('hex');
    if (st.nlink > 1) e.nlink = st.nlink;
  }
  if (type === 'symlink') {
    e.target = readlinkSync(host);
    delete (e as Partial<FsEntry>).mode;
  }
  return e;
}
