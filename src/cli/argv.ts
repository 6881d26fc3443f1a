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

export interface FlagShapes {
  known: ReadonlySet<string>;
  /** Flags whose every value is kept. */
  repeatable: ReadonlySet<string>;
  /** Flags that take no value. */
  boolean: ReadonlySet<string>;
}

/**
 * Go's `flag` package keeps the last value of a flag given twice, and wrapper scripts
 * rely on it (`exec compute-worker $DEFAULTS "$@"`); oclif refuses a repeated flag. So
 * every occurrence but the last of a single-value flag is dropped, with its value.
 * A flag's value is the next word, as Go reads it, unless written `--flag=value`.
 */
export function lastValueWins(argv: readonly string[], shapes: FlagShapes): string[] {
  const items: { name?: string; words: string[] }[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      items.push({ words: argv.slice(i) });
      break;
    }
    const m = /^--([a-z][a-z0-9-]+)(=.*)?$/.exec(arg);
    const name = m?.[1];
    if (!m || name === undefined || !shapes.known.has(name)) {
      items.push({ words: [arg] });
      continue;
    }
    const words = [arg];
    if (m[2] === undefined && !shapes.boolean.has(name) && i + 1 < argv.length) {
      words.push(argv[++i] as string);
    }
    items.push({ name, words });
  }
  const single = (name?: string): name is string =>
    name !== undefined && !shapes.repeatable.has(name);
  const last = new Map<string, number>();
  items.forEach((item, index) => {
    if (single(item.name)) last.set(item.name, index);
  });
  return items
    .filter((item, index) => !single(item.name) || last.get(item.name) === index)
    .flatMap((item) => item.words);
}

/**
 * The original had no subcommands: its image ran `compute-worker -nsqlookupd-urls ...`.
 * A command line that starts with a flag (other than help or version) runs the daemon.
 */
export function defaultToRun(argv: readonly string[]): string[] {
  const first = argv[0];
  if (first === undefined || !first.startsWith('-') || first === '--') return [...argv];
  if (/^(--help|-h|--version|-v)(=|$)/.test(first)) return [...argv];
  return ['run', ...argv];
}

/**
 * The words people type for help and the version, which oclif alone refuses: `help`
 * (`help run` is `run --help`), `version`, and `-h` anywhere before `--`.
 */
export function helpAndVersionWords(argv: readonly string[]): string[] {
  if (argv[0] === 'help') return [...argv.slice(1), '--help'];
  if (argv[0] === 'version' && argv.length === 1) return ['--version'];
  const end = argv.indexOf('--');
  return argv.map((arg, i) => (arg === '-h' && (end === -1 || i < end) ? '--help' : arg));
}

/** What bin/run.js does to a command line before oclif reads it. */
export function prepareArgv(argv: readonly string[], shapes: FlagShapes): string[] {
  const words = helpAndVersionWords(argv);
  return defaultToRun(lastValueWins(normalizeGoStyleArgs(words, shapes.known), shapes));
}
