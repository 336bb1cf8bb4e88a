// What an image reference names, before anything is fetched: its transport (a registry,
// an OCI layout directory, an OCI or docker-save tarball), the registry host it would
// come from and whether the operator allows that host. Pure; the store (store.ts) acts
// on the result.

/** Manifest digest: the store's key and what a deploy pins. */
export const DIGEST_PATTERN = /^sha256:[a-f0-9]{64}$/;

export type ImageSource =
  | { transport: 'docker'; registry: string; repository: string; tag: string | null; digest: string | null; skopeo: string }
  | { transport: 'oci' | 'oci-archive' | 'docker-archive'; path: string; skopeo: string };

export class ReferenceError extends Error {
  override name = 'ReferenceError';
}

const REPO_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const HOST = /^(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?$/;
const LOCAL_PATH = /^\/[^\0:]*$/;

/**
 * `docker://host/repo:tag`, `host/repo@sha256:…` (docker:// assumed), `oci:/dir[:tag]`,
 * `oci-archive:/file.tar[:tag]`, `docker-archive:/file.tar`. A registry name without a
 * host is Docker Hub's, as docker and skopeo read it.
 */
export function parseReference(ref: string): ImageSource {
  if (ref.length === 0 || ref.length > 1024 || /[\s\0]/.test(ref)) throw new ReferenceError(`Invalid image reference ${JSON.stringify(ref.slice(0, 100))}`);
  for (const transport of ['oci-archive', 'docker-archive', 'oci'] as const) {
    if (!ref.startsWith(`${transport}:`)) continue;
    const rest = ref.slice(transport.length + 1);
    const colon = rest.indexOf(':');
    const path = colon < 0 ? rest : rest.slice(0, colon);
    const tag = colon < 0 ? null : rest.slice(colon + 1);
    if (!LOCAL_PATH.test(path) || path.split('/').includes('..')) throw new ReferenceError(`Invalid image reference ${JSON.stringify(ref)}: the path must be absolute, without ..`);
    if (tag !== null && !TAG.test(tag)) throw new ReferenceError(`Invalid image reference ${JSON.stringify(ref)}: bad tag ${JSON.stringify(tag)}`);
    return { transport, path, skopeo: tag === null ? `${transport}:${path}` : `${transport}:${path}:${tag}` };
  }
  const name = ref.startsWith('docker://') ? ref.slice('docker://'.length) : ref;
  let rest = name;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST_PATTERN.test(digest)) throw new ReferenceError(`Invalid image reference ${JSON.stringify(ref)}: the digest must be sha256:<64 hex>`);
  }
  let tag: string | null = null;
  const lastSlash = rest.lastIndexOf('/');
  const lastColon = rest.lastIndexOf(':');
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1);
    rest = rest.slice(0, lastColon);
    if (!TAG.test(tag)) throw new ReferenceError(`Invalid image reference ${JSON.stringify(ref)}: bad tag ${JSON.stringify(tag)}`);
  }
  const parts = rest.split('/');
  const first = parts[0] ?? '';
  const hasHost = parts.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['));
  const registry = hasHost ? first : 'docker.io';
  const repoParts = hasHost ? parts.slice(1) : parts.length === 1 ? ['library', ...parts] : parts;
  if (!HOST.test(registry) || repoParts.length === 0 || !repoParts.every((p) => REPO_COMPONENT.test(p))) {
    throw new ReferenceError(`Invalid image reference ${JSON.stringify(ref)}`);
  }
  if (tag === null && digest === null) tag = 'latest';
  const repository = repoParts.join('/');
  const skopeo = `docker://${registry}/${repository}${digest ? `@${digest}` : `:${tag}`}`;
  return { transport: 'docker', registry, repository, tag, digest, skopeo };
}

/** `host[:port]` entries of ZVIZ_IMAGE_REGISTRIES (comma-separated). */
export function parseRegistryList(v: string): string[] {
  return v
    .split(',')
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s.length > 0);
}

/** A registry may be pulled from only when the operator listed it; local imports are the admin's. */
export function registryAllowed(source: ImageSource, allowed: readonly string[]): boolean {
  return source.transport !== 'docker' || allowed.includes(source.registry.toLowerCase());
}

/** The reference pinned to a digest: what a deploy stores, and what a pull by digest fetches. */
export function pinnedReference(source: ImageSource, digest: string): string {
  if (source.transport === 'docker') return `${source.registry}/${source.repository}@${digest}`;
  return digest;
}
