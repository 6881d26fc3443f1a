/**
 * What storage says about a blob's bytes beside them: a sha-256 digest (RFC 9530
 * Repr-Digest or Content-Digest, `sha-256=:<base64>:`, or RFC 3230 Digest,
 * `sha-256=<base64>`), its ETag and its Content-Length. The staged data cache reuses a
 * volume only when storage still gives the same validator for each of its blobs.
 */
export interface BlobValidators {
  /** The sha-256 storage declares, base64 as sent. */
  sha256?: string;
  /** The ETag as sent, quotes included; a weak one starts with W/. */
  etag?: string;
  size?: number;
}

type Headers = Record<string, string | string[] | undefined>;

export function validatorsFrom(headers: Headers): BlobValidators {
  const one = (name: string) => {
    const value = headers[name];
    return Array.isArray(value) ? value.join(',') : value;
  };
  const sha256 =
    structuredDigest(one('repr-digest')) ??
    structuredDigest(one('content-digest')) ??
    legacyDigest(one('digest'));
  const etag = one('etag')?.trim();
  const length = Number(one('content-length'));
  return {
    ...(sha256 ? { sha256 } : {}),
    ...(etag ? { etag } : {}),
    ...(one('content-length') !== undefined && Number.isSafeInteger(length) && length >= 0
      ? { size: length }
      : {}),
  };
}

/** `sha-256=:BASE64:` among a dictionary's members (RFC 9530). */
function structuredDigest(value: string | undefined): string | undefined {
  if (!value) return undefined;
  for (const member of value.split(',')) {
    const match = /^\s*sha-256\s*=\s*:([A-Za-z0-9+/=]+):\s*$/i.exec(member);
    if (match?.[1]) return match[1];
  }
  return undefined;
}

/** `SHA-256=BASE64` among the instance digests (RFC 3230). */
function legacyDigest(value: string | undefined): string | undefined {
  if (!value) return undefined;
  for (const member of value.split(',')) {
    const match = /^\s*sha-256\s*=\s*([A-Za-z0-9+/=]+)\s*$/i.exec(member);
    if (match?.[1]) return match[1];
  }
  return undefined;
}

/** Whether a staged copy of the blob could ever be found the same again (see sameBlob). */
export function canRevalidate(now: BlobValidators): boolean {
  return (
    now.sha256 !== undefined ||
    (now.etag !== undefined && !now.etag.startsWith('W/') && now.size !== undefined)
  );
}

/**
 * Whether storage's validators now say the blob is the one recorded when it was staged:
 * the same digest, or without a digest the same strong ETag and length. No validator, a
 * weak ETag alone, or any difference: it may have changed.
 */
export function sameBlob(
  recorded: { sha256: string; etag?: string; size: number },
  now: BlobValidators,
): boolean {
  if (now.sha256) return now.sha256 === recorded.sha256;
  if (!now.etag || now.etag.startsWith('W/') || now.size === undefined) return false;
  return now.etag === recorded.etag && now.size === recorded.size;
}
