/** Numeric dotted versions ("4.3.1", "v1.17.8-rc.1"): the first run of digits and dots counts. */
export function parseVersion(text: string): number[] | undefined {
  const m = /(\d+(?:\.\d+)*)/.exec(text);
  return m ? (m[1] as string).split('.').map(Number) : undefined;
}

/** <0, 0, >0 as a is older than, the same as, or newer than b. */
export function compareVersions(a: string, b: string): number {
  const x = parseVersion(a) ?? [];
  const y = parseVersion(b) ?? [];
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

export function versionBelow(version: string, floor: string): boolean {
  return compareVersions(version, floor) < 0;
}
