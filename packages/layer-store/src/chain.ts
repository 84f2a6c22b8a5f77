import { type Digest, sha256Of } from '@mybuild/oci';

/**
 * Chain IDs of a layer stack (OCI image spec, "ChainID"): chainID(0) = diffID(0),
 * chainID(n) = sha256(chainID(n-1) + " " + diffID(n)). A snapshot is keyed by the chain ID
 * of its top layer, so one unpacked layer stack is shared by every image that has it.
 */
export function chainIds(diffIds: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  for (const diffId of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? diffId : sha256Of(`${prev} ${diffId}`));
  }
  return out;
}

/** Chain ID of the whole stack, or undefined for an image without layers. */
export function chainId(diffIds: readonly Digest[]): Digest | undefined {
  return chainIds(diffIds).at(-1);
}
