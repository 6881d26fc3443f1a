import parsePrometheusTextFormat, { type PromFamily } from 'parse-prometheus-text-format';

/**
 * A scrape, parsed by a real Prometheus text-format parser, with lookups by name and labels.
 * The parser folds every series of a labelled histogram into one (keeping neither labels
 * nor sums), so samples are read from a second parse without the histogram TYPE lines:
 * there `x_bucket`, `x_sum` and `x_count` are series of their own, labels kept.
 */
export class Scrape {
  /** Families with their names, help and types. */
  readonly families: PromFamily[];
  private readonly series: PromFamily[];
  constructor(readonly text: string) {
    this.families = parsePrometheusTextFormat(text);
    this.series = parsePrometheusTextFormat(text.replace(/^# TYPE \S+ (histogram|summary)$/gm, ''));
  }

  family(name: string): PromFamily | undefined {
    return this.families.find((f) => f.name === name);
  }

  /** The sample of series `name` whose labels include `labels`; undefined when there is none. */
  sample(name: string, labels: Record<string, string> = {}) {
    // Histograms are written series by series: one name comes back as several families.
    return this.series
      .filter((f) => f.name === name)
      .flatMap((f) => f.metrics)
      .find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  }

  /** The value of a series (a counter, a gauge, a histogram's x_count); 0 when absent. */
  value(name: string, labels: Record<string, string> = {}): number {
    return Number(this.sample(name, labels)?.value ?? 0);
  }
}

/** GETs `path` from the metrics server at host:port. */
export async function get(
  address: string,
  path: string,
): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://${address}${path}`);
  return { status: response.status, body: await response.text() };
}
