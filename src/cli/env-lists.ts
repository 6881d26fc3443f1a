/** The parts of an oclif flag definition that say where a list comes from. */
interface ListFlag {
  multiple?: boolean;
  delimiter?: string;
  env?: string;
}

/**
 * oclif hands a repeatable flag's environment variable to the flag as one value, so
 * `COMPUTE_WORKER_NSQLOOKUPD_URLS=a:4161,b:4161` would be one address, or each of its
 * characters one. Such a variable becomes the flag on the command line instead
 * (`--nsqlookupd-urls=a:4161,b:4161`), where oclif splits it at the flag's delimiter and
 * checks each value, as it does for the flag written by hand. A flag given on the command
 * line wins over its variable, as for every other flag.
 */
export function withEnvLists(
  flags: Readonly<Record<string, ListFlag>>,
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): string[] {
  const end = argv.indexOf('--');
  const words = end === -1 ? [...argv] : argv.slice(0, end);
  const rest = end === -1 ? [] : argv.slice(end);
  const given = (name: string) =>
    words.some((w) => w === `--${name}` || w.startsWith(`--${name}=`));
  const added: string[] = [];
  for (const [name, flag] of Object.entries(flags)) {
    if (!flag.multiple || !flag.env || given(name)) continue;
    const value = env[flag.env]?.trim();
    if (value) added.push(`--${name}=${value}`);
  }
  return [...words, ...added, ...rest];
}
