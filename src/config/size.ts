/** Sizes as container engines write them: 512m, 4g, 1.5G, 64k, 1024 (bytes). */
const UNIT_BYTES: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  t: 1024 ** 4,
  tb: 1024 ** 4,
};

export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = m ? UNIT_BYTES[(m[2] as string).toLowerCase()] : undefined;
  if (!m || unit === undefined) {
    throw new Error(
      `invalid size "${text}": expected a number with an optional unit k, m, g or t, e.g. 4g, 512m`,
    );
  }
  return Math.floor(Number(m[1]) * unit);
}

/** Formats bytes in the engine's unit syntax, exactly when possible (4g, 512m), else in bytes. */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [
    ['g', 1024 ** 3],
    ['m', 1024 ** 2],
    ['k', 1024],
  ] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes}`;
}
