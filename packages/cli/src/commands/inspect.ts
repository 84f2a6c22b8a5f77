import { MAX_JSON_BLOB } from '@mybuild/layer-store';
import { type ImageConfig, type ImageIndex, type ImageManifest, MyBuildError, parseNormalizedReference, repositoryName, familiarReference } from '@mybuild/oci';
import type { RegistryClient } from '@mybuild/registry-client';
import type { CommandContext } from '../main.js';
import { parseCommand, usageError } from '../args.js';
import { open } from '../store.js';
import { registryClient } from '../registry.js';

const HELP = `Usage: mybuild inspect [--platform OS/ARCH] [--raw] IMAGE...

Show an image's manifest and config as JSON (an array, one object per image).
IMAGE is a tag, a digest, an image ID or a short ID in the local store, or
docker://NAME[:TAG|@DIGEST] for an image in a registry (read there, nothing is stored).

  --platform P   the platform to show of a multi-platform image (default: this host's)
  --raw          print the manifest (or index) exactly as stored or served, for one IMAGE
`;

const REMOTE = 'docker://';

export async function run(ctx: CommandContext): Promise<number> {
  const { values, positionals } = parseCommand('inspect', ctx.args, {
    platform: { type: 'string' },
    raw: { type: 'boolean' },
  }, HELP);
  if (positionals.length === 0) throw usageError('inspect', 'needs an image', 'inspect IMAGE...');
  if (values.raw && positionals.length !== 1) throw usageError('inspect', '--raw takes exactly one image', 'inspect --raw IMAGE');
  const remote = positionals.some((p) => p.startsWith(REMOTE));
  const local = positionals.some((p) => !p.startsWith(REMOTE));
  const store = local ? await open(ctx.global) : undefined;
  const client = remote ? registryClient(ctx.global) : undefined;
  try {
    const out = [];
    for (const ref of positionals) {
      if (ref.startsWith(REMOTE)) {
        const r = await inspectRemote(client!, ref.slice(REMOTE.length), values.platform, values.raw === true);
        if (Buffer.isBuffer(r)) {
          process.stdout.write(r);
          return 0;
        }
        out.push(r);
        continue;
      }
      const img = await store!.images.resolve(ref, values.platform ? { platform: values.platform } : {});
      if (values.raw) {
        const top = img.index?.descriptor ?? img.manifestDescriptor;
        process.stdout.write(await store!.content.readBytes(top.digest, MAX_JSON_BLOB));
        return 0;
      }
      out.push({
        Id: img.id,
        Digest: (img.index?.descriptor ?? img.manifestDescriptor).digest,
        RepoTags: img.names,
        MediaType: img.manifestDescriptor.mediaType,
        Size: img.manifest.layers.reduce((n, l) => n + l.size, img.configDescriptor.size),
        Architecture: img.config.architecture,
        Os: img.config.os,
        Created: img.config.created,
        ...(img.index ? { Index: img.index.index } : {}),
        Manifest: img.manifest,
        Config: img.config,
      });
    }
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } finally {
    client?.close();
  }
  return 0;
}

/**
 * An image in a registry, in the local inspect's shape plus `Name` and `Layers` (as skopeo
 * inspect shows them); with `raw`, the top manifest's bytes as served.
 */
async function inspectRemote(client: RegistryClient, input: string, platform: string | undefined, raw: boolean): Promise<Buffer | Record<string, unknown>> {
  const ref = parseNormalizedReference(input);
  if (raw) return (await client.getManifest(ref)).bytes;
  const { top, image } = await client.getImageManifest(ref, platform);
  const manifest = image.manifest as ImageManifest;
  const configDesc = manifest.config;
  if (configDesc.size > MAX_JSON_BLOB) {
    throw new MyBuildError('SIZE_EXCEEDED', `config is ${configDesc.size} bytes, more than the ${MAX_JSON_BLOB} an image config may have`, { where: familiarReference(ref) });
  }
  const chunks: Buffer[] = [];
  for await (const c of (await client.fetchBlob(ref, configDesc)) as AsyncIterable<Buffer>) chunks.push(c);
  const configBytes = Buffer.concat(chunks);
  let config: ImageConfig | Record<string, unknown>;
  try {
    config = JSON.parse(configBytes.toString('utf8')) as ImageConfig;
  } catch {
    throw new MyBuildError('INVALID_ARGUMENT', 'the image config is not JSON', { where: `${familiarReference(ref)} ${configDesc.digest}` });
  }
  const c = config as Partial<ImageConfig>;
  return {
    Name: repositoryName(ref),
    Id: configDesc.digest,
    Digest: top.descriptor.digest,
    RepoTags: ref.tag !== undefined && ref.digest === undefined ? [familiarReference(ref)] : [],
    MediaType: image.descriptor.mediaType,
    Size: manifest.layers.reduce((n, l) => n + l.size, configDesc.size),
    Architecture: c.architecture,
    Os: c.os,
    Created: c.created,
    Layers: manifest.layers.map((l) => l.digest),
    ...(top !== image ? { Index: top.manifest as ImageIndex, ManifestDigest: image.descriptor.digest } : {}),
    Manifest: manifest,
    Config: config,
  };
}
