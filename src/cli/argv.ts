/**
 * The original worker was a Go program: its flags have one dash (`-learn-timeout 20m0s`).
 * Rewrites single-dash long flags that this tool knows into the double-dash form, so a
 * command line written for the original starts this worker unchanged. Values, short
 * flags, unknown words and everything after `--` are left alone.
 */
export function normalizeGoStyleArgs(
  argv: readonly string[],
  known: ReadonlySet<string>,
): string[] {
  const out: string[] = [];
  let passthrough = false;
  for (const arg of argv) {
    if (passthrough || arg === '--') {
      passthrough = true;
      out.push(arg);
      continue;
    }
    const m = /^-([a-z][a-z0-9-]+)(=.*)?$/.exec(arg);
    out.push(m && known.has(m[1] as string) ? `-${arg}` : arg);
  }
  return out;
}
