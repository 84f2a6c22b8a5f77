import { contentBlobSink, storedName } from '@mybuild/layer-store';
import {
  apiHost,
  type BlobSink,
  formatReference,
  MyBuildError,
  type Descriptor,
  formatPlatform,
  type ImageConfig,
  type Platform,
  parseNormalizedReference,
  parsePlatform,
  platformScore,
} from '@mybuild/oci';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { open } from '../store.js';
import { familiarTagged, progressMode, registryClient, tagOrDigest, TransferProgress } from '../registry.js';

const HELP = `Usage: mybuild pull [--platform OS/ARCH[/VARIANT]] [-a] [-q] NAME[:TAG|@DIGEST]

Download an image from a registry into the local store.

  --platform P           the platform to pull from a multi-platform image (default: this host's)
  -a, --all-platforms    pull every platform of a multi-platform image; the index is tagged
  -q, --quiet            print only the image name
  --progress MODE        auto | plain | tty | rawjson | quiet (per-blob events on stderr)

Blobs the store already has are not downloaded again. The name is tagged only when every
blob is stored: a failed pull leaves no tag (its blobs go with the next 'mybuild prune').
From a multi-platform image, one platform's manifest is tagged (as docker does), unless
--all-platforms. A NAME@DIGEST pull records the image without a tag.
`;

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('pull', ctx.args, {
    platform: { type: 'string' },
    'all-platforms': { type: 'boolean', short: 'a' },
    quiet: { type: 'boolean', short: 'q' },
  }, HELP);
  if (positionals.length !== 1) throw usageError('pull', positionals.length ? 'takes one image' : 'needs an image', 'pull NAME[:TAG|@DIGEST]');
  if (values.platform !== undefined && values['all-platforms']) throw usageError('pull', '--platform and --all-platforms exclude each other', 'pull [--platform P | -a] NAME');
  const want: Platform | undefined = values.platform !== undefined ? parsePlatform(values.platform) : undefined;
  const ref = parseNormalizedReference(positionals[0]!);
  const name = familiarTagged(ref);
  const mode = progressMode(ctx.global, values);
  const quiet = values.quiet === true;

  const store = await open(ctx.global);
  const client = registryClient(ctx.global);
  const progress = new TransferProgress(mode, 'pull');
  let written = 0;
  const inner = contentBlobSink(store.content);
  const sink: BlobSink = {
    has: (digest) => inner.has(digest),
    async put(desc, data) {
      try {
        await inner.put(desc, data);
      } catch (err) {
        // The store names its ingest; say which image and registry sent the bad blob.
        if (err instanceof MyBuildError && (err.code === 'DIGEST_MISMATCH' || err.code === 'SIZE_EXCEEDED')) {
          throw new MyBuildError(err.code, `blob ${desc.digest} from ${apiHost(ref.domain)}: ${err.message}`, {
            where: formatReference(ref),
            hint: 'the registry sent other content than the manifest names; nothing was tagged',
            cause: err,
          });
        }
        throw err;
      }
      written++;
    },
  };
  // Printed once the manifest resolved (the first blob event, or the end): a missing image fails with the error line only.
  let announced = quiet;
  const announce = () => {
    if (announced) return;
    announced = true;
    process.stdout.write(`${tagOrDigest(ref)}: Pulling from ${ref.path}\n`);
  };
  let upToDate = false;
  let top: Descriptor;
  let target: Descriptor;
  try {
    ({ top, target, upToDate } = await store.withImportLease(async () => {
      const result = await client.pull(ref, sink, {
        platform: values['all-platforms'] ? 'all' : (want ?? undefined),
        // The store hashes and size-checks every blob it takes in: no second sha256 pass in the client.
        verifyBlobs: false,
        onProgress: (e) => {
          announce();
          progress.onProgress(e);
        },
      });
      announce();
      let chosen: Descriptor;
      if (values['all-platforms'] || !result.index) {
        chosen = result.descriptor;
      } else {
        const entry = result.index.manifests.find((d) => d.digest === result.manifestDescriptor.digest);
        chosen = { ...result.manifestDescriptor, ...(entry?.platform ? { platform: entry.platform } : {}) };
      }
      let before: string | undefined;
      if (ref.digest !== undefined) {
        await store.images.add(chosen);
      } else {
        before = (await store.images.list()).find((r) => r.name !== '' && storedName(r.name) === name)?.target.digest;
        await store.images.tag(name, chosen);
      }
      return { top: result.descriptor, target: chosen, upToDate: written === 0 && (ref.digest !== undefined || before === chosen.digest) };
    }));
  } finally {
    progress.end();
    client.close();
  }
  if (want && !values['all-platforms'] && target.digest === top.digest) {
    // A single-platform image: say so when it is not the platform asked for (docker warns too).
    const config = await configOf(store, target);
    const have: Platform | undefined = config && { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) };
    if (have && platformScore(have, want) === 0) {
      process.stderr.write(`mybuild: warning: the image's platform (${formatPlatform(have)}) does not match the requested platform (${formatPlatform(want)})\n`);
    }
  }
  if (quiet) {
    process.stdout.write(`${name}\n`);
    return 0;
  }
  process.stdout.write(`Digest: ${top.digest}\n`);
  process.stdout.write(upToDate ? `Status: Image is up to date for ${name}\n` : `Status: Downloaded newer image for ${name}\n`);
  process.stdout.write(`${name}\n`);
  return 0;
}

async function configOf(store: Awaited<ReturnType<typeof open>>, manifest: Descriptor): Promise<ImageConfig | undefined> {
  try {
    const img = await store.images.resolve(manifest.digest);
    return img.config;
  } catch {
    return undefined;
  }
}
