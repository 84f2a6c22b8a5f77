import { contentBlobSource, MAX_JSON_BLOB, storedName } from '@mybuild/layer-store';
import { type Descriptor, formatPlatform, hostPlatform, type ImageIndex, isIndexMediaType, layerCompression, MyBuildError, parseNormalizedReference, parsePlatform, parseReference, repositoryName } from '@mybuild/oci';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { open } from '../store.js';
import { progressMode, registryClient, TransferProgress } from '../registry.js';

const HELP = `Usage: mybuild push [--all] [--platform OS/ARCH[/VARIANT]] [-q] SOURCE [DESTINATION]

Upload an image from the local store to a registry. DESTINATION (NAME[:TAG]) defaults to
SOURCE's name; SOURCE is a name or an image ID.

  --all                  SOURCE is a multi-platform image: push its index and every
                         platform's manifest (all of them must be in the store: pull -a)
  --platform P           the platform to push from a multi-platform image (default: this host's)
  -q, --quiet            print only the digest line
  --progress MODE        auto | plain | tty | rawjson | quiet (per-blob events on stderr)

Manifests are pushed byte for byte, so the digest in the registry is the one in the store.
A multi-platform image (an index in the store) is pushed as one platform's manifest unless
--all is given, as 'docker push' and 'podman push' do; its digest is then that manifest's.
Blobs the registry already has are not sent again; blobs another repository of the same
registry holds (an image pulled from there) are mounted instead of uploaded.
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('push', ctx.args, {
    all: { type: 'boolean' },
    platform: { type: 'string' },
    quiet: { type: 'boolean', short: 'q' },
  }, HELP);
  if (positionals.length < 1 || positionals.length > 2) throw usageError('push', positionals.length ? 'takes a source and at most one destination' : 'needs an image', 'push SOURCE [DESTINATION]');
  const all = values.all === true;
  if (all && values.platform !== undefined) throw usageError('push', '--platform and --all exclude each other', 'push [--all | --platform P] SOURCE [DESTINATION]');
  const [src, dst] = positionals as [string, string | undefined];
  const mode = progressMode(ctx.global, values);
  const quiet = values.quiet === true;

  const store = await open(ctx.global);
  const img = await store.images.resolve(src, values.platform !== undefined ? { platform: values.platform } : {});
  let destInput = dst;
  if (destInput === undefined) {
    let srcName: string | undefined;
    try {
      srcName = parseReference(src).digest === undefined ? storedName(src) : undefined;
    } catch {
      srcName = undefined;
    }
    if (srcName === undefined || !img.names.some((n) => storedName(n) === srcName)) {
      throw usageError('push', `${JSON.stringify(src)} is not a name; say where to push it`, 'push IMAGE_ID NAME[:TAG]');
    }
    destInput = src;
  }
  const dest = parseNormalizedReference(destInput);
  if (dest.digest !== undefined) throw usageError('push', 'the destination must be a name with a tag, not a digest', 'push SOURCE NAME[:TAG]');

  let pushed: Descriptor;
  let note: string | undefined;
  if (img.index && all) {
    pushed = img.index.descriptor;
    const missing = await missingChildren(store, img.index.index);
    if (missing.length > 0) {
      throw new MyBuildError('FAILED_PRECONDITION', `push --all: the store lacks ${missing.length} of the index's ${img.index.index.manifests.length} platform manifests (${missing.join(', ')})`, {
        where: src,
        hint: `pull them with 'mybuild pull --all-platforms', or push one platform without --all`,
      });
    }
  } else {
    pushed = img.manifestDescriptor;
    if (img.index) {
      const platform = values.platform !== undefined ? parsePlatform(values.platform) : hostPlatform();
      note = `Pushing the ${formatPlatform(platform)} manifest of the multi-platform image ${src} (--all pushes every platform)`;
    }
  }
  // Uncompressed layers (a build result, a docker-archive load) are compressed for the
  // registry, as docker push does; an index pushed with --all goes as stored.
  // The builder (which owns that step) is loaded only when there is something to compress.
  let bytes: Buffer | undefined;
  if (!(img.index && all) && img.manifest.layers.some((l) => layerCompression(l.mediaType) === 'none')) {
    const compressed = await (await import('@mybuild/builder')).pushableManifest(store, img);
    if (compressed) ({ desc: pushed, bytes } = compressed);
  }
  bytes ??= await store.content.readBytes(pushed.digest, MAX_JSON_BLOB);
  if (bytes.length !== pushed.size) {
    throw new MyBuildError('INVALID_ARGUMENT', `manifest has ${bytes.length} bytes but its descriptor says ${pushed.size}`, { where: pushed.digest });
  }
  // A repository of the same registry this image also came from: its blobs can be mounted.
  const mountFrom = img.names
    .map((n) => {
      try {
        return parseNormalizedReference(n);
      } catch {
        return undefined;
      }
    })
    .find((r) => r !== undefined && r.domain === dest.domain && r.path !== dest.path)?.path;

  const client = registryClient(ctx.global);
  const progress = new TransferProgress(mode, 'push', mountFrom ? { mountFrom } : {});
  if (!quiet) process.stdout.write(`The push refers to repository [${repositoryName(dest)}]\n`);
  if (note) progress.note(note);
  let result: Descriptor;
  try {
    // Store blobs were verified when written and are read-only; the registry checks each digest
    // on upload (a damaged blob fails there), so no extra sha256 pass here.
    result = await client.push(contentBlobSource(store.content, { verify: false }), bytes, dest, {
      mediaType: pushed.mediaType,
      ...(mountFrom ? { mountFrom } : {}),
      onProgress: progress.onProgress,
    });
  } finally {
    progress.end();
    client.close();
  }
  process.stdout.write(`${dest.tag ?? 'latest'}: digest: ${result.digest} size: ${result.size}\n`);
  return 0;
}

/** Platforms (or digests) of an index's manifests that are not in the store. */
async function missingChildren(store: Awaited<ReturnType<typeof open>>, index: ImageIndex): Promise<string[]> {
  const out: string[] = [];
  for (const d of index.manifests) {
    if (isIndexMediaType(d.mediaType)) continue; // nested indexes: the push itself reports what lacks
    if (!(await store.content.has(d.digest))) out.push(d.platform ? formatPlatform(d.platform) : d.digest);
  }
  return out;
}
