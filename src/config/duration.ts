/**
 * Go-style durations, as the original worker took them on its command line:
 * "20m", "1h30m", "15m0s", "1.5h", "300ms". A bare number is seconds.
 */
const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  µs: 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  // Not Go's: for retention periods (7d), which hours would make hard to read.
  d: 86_400_000,
};

const PART = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d)/y;

/** Parses a duration into milliseconds, or throws an Error naming the bad text. */
export function parseDuration(text: string): number {
  const input = text.trim();
  if (/^\d+(\.\d+)?$/.test(input)) return Math.round(Number(input) * 1000);
  if (input === '0') return 0;
  let total = 0;
  PART.lastIndex = 0;
  let matched = 0;
  while (PART.lastIndex < input.length) {
    const start = PART.lastIndex;
    const m = PART.exec(input);
    if (!m || m.index !== start) {
      throw new Error(
        `invalid duration "${text}": expected a number with a unit (ns, us, ms, s, m, h, d), e.g. 20m, 1h30m, 15m0s`,
      );
    }
    total += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
    matched++;
  }
  if (matched === 0) throw new Error(`invalid duration "${text}": it is empty`);
  return Math.round(total);
}

/** Formats milliseconds the way Go prints a duration: 20m0s, 1h30m0s, 1.5s, 250ms. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000) return `${ms}ms`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = (ms % 60_000) / 1000;
  const sec = `${Number.isInteger(s) ? s : s.toFixed(3).replace(/0+$/, '')}s`;
  if (h > 0) return `${h}h${m}m${sec}`;
  if (m > 0) return `${m}m${sec}`;
  return sec;
}
