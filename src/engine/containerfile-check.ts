import { WorkerError } from '../errors.js';

/**
 * Rejects Containerfile features that would let an untrusted build reach the network or
 * the host: the builder honours a Containerfile's `RUN --network=host` over the CLI's
 * `--network=none`, fetches `ADD <url>` itself, and keeps `--mount=type=cache` between
 * builds. Flags are ARG-expanded by the builder, so the file is parsed, not grepped.
 */
export function checkContainerfile(text: string, fileName = 'Containerfile'): void {
  const problem = findProblem(text);
  if (problem) {
    throw new WorkerError(
      'BUILD_CONTEXT_REJECTED',
      `The build context's ${fileName} is not allowed: ${problem}`,
      {
        hint: 'build steps run without network: no RUN --network other than none, no cache/secret/ssh mounts, no --security=insecure, no ADD from a URL or git',
      },
    );
  }
}

const DIRECTIVE = /^#\s*([a-zA-Z]+)\s*=\s*(.*?)\s*$/;

export function findProblem(text: string): string | undefined {
  const { escapeChar, syntax, body } = readDirectives(text.split(/\r?\n/));
  if (syntax !== undefined)
    return `the "# syntax=${syntax}" directive loads a builder frontend from a registry`;
  const vars = new Map<string, string>();
  for (const line of logicalLines(body, escapeChar)) {
    const problem = checkInstruction(line, vars, escapeChar);
    if (problem) return problem;
  }
  return undefined;
}

function readDirectives(lines: string[]): { escapeChar: string; syntax?: string; body: string[] } {
  let escapeChar = '\\';
  let syntax: string | undefined;
  let i = 0;
  for (; i < lines.length; i++) {
    const m = DIRECTIVE.exec(lines[i] as string);
    if (!m) break;
    const key = (m[1] as string).toLowerCase();
    if (key === 'escape') escapeChar = m[2] === '`' ? '`' : '\\';
    else if (key === 'syntax') syntax = m[2];
    else break;
  }
  return { escapeChar, syntax, body: lines.slice(i) };
}

/** Joins continued lines, dropping comment lines as the builder does (also inside a continuation). */
function logicalLines(lines: string[], escapeChar: string): string[] {
  const out: string[] = [];
  let current = '';
  let continuing = false;
  for (const raw of lines) {
    const trimmed = raw.trim();
    if (trimmed.startsWith('#')) continue;
    if (!continuing && trimmed === '') continue;
    const continues = trimmed.endsWith(escapeChar);
    current += `${continues ? trimmed.slice(0, -1) : trimmed} `;
    continuing = continues;
    if (!continues) {
      out.push(current.trim());
      current = '';
    }
  }
  if (current.trim()) out.push(current.trim());
  return out;
}

function checkInstruction(
  line: string,
  vars: Map<string, string>,
  escapeChar: string,
): string | undefined {
  const m = /^(\S+)\s*(.*)$/.exec(line);
  if (!m) return undefined;
  const instruction = (m[1] as string).toUpperCase();
  const rest = m[2] as string;
  switch (instruction) {
    case 'ONBUILD':
      return checkInstruction(rest, vars, escapeChar);
    case 'ARG':
    case 'ENV':
      recordVars(rest, vars, escapeChar);
      return undefined;
    case 'FROM':
      // Each stage starts with only the global ARGs; keeping them all only makes the check stricter.
      return undefined;
    case 'RUN':
      return checkRunFlags(leadingFlags(rest), vars, escapeChar);
    case 'ADD':
      return checkAddSources(rest, vars, escapeChar);
    default:
      return undefined;
  }
}

function recordVars(rest: string, vars: Map<string, string>, escapeChar: string): void {
  for (const token of rest.split(/\s+/).filter(Boolean)) {
    const eq = token.indexOf('=');
    const name = eq < 0 ? token : token.slice(0, eq);
    const value = eq < 0 ? '' : unquote(token.slice(eq + 1));
    vars.set(name, expand(value, vars, escapeChar));
  }
}

function leadingFlags(rest: string): string[] {
  const flags: string[] = [];
  const tokens = rest.split(/\s+/).filter(Boolean);
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i] as string;
    if (!token.startsWith('--')) break;
    if (!token.includes('=') && i + 1 < tokens.length) {
      flags.push(`${token}=${tokens[i + 1]}`);
      i++;
    } else {
      flags.push(token);
    }
  }
  return flags;
}

function checkRunFlags(
  flags: string[],
  vars: Map<string, string>,
  escapeChar: string,
): string | undefined {
  for (const flag of flags) {
    const expanded = unquote(expand(flag, vars, escapeChar));
    if (expanded.includes('$')) return `RUN flag ${flag} uses a variable that cannot be checked`;
    const eq = expanded.indexOf('=');
    const name = (eq < 0 ? expanded : expanded.slice(0, eq)).toLowerCase();
    const value = eq < 0 ? '' : expanded.slice(eq + 1);
    if (name === '--network') {
      if (value.toLowerCase() !== 'none') return `RUN --network=${value} (only none is allowed)`;
    } else if (name === '--mount') {
      const type = mountType(value);
      if (['cache', 'ssh', 'secret'].includes(type)) return `RUN --mount=type=${type}`;
    } else if (name === '--security') {
      if (value.toLowerCase() !== 'sandbox') return `RUN --security=${value}`;
    } else {
      return `unknown RUN flag ${name}`;
    }
  }
  return undefined;
}

function mountType(value: string): string {
  for (const part of value.split(',')) {
    const [key, v] = part.split('=');
    if (key?.trim().toLowerCase() === 'type')
      return unquote(v ?? '')
        .trim()
        .toLowerCase();
  }
  return 'bind';
}

function checkAddSources(
  rest: string,
  vars: Map<string, string>,
  escapeChar: string,
): string | undefined {
  let words: string[];
  const flagsAndRest = rest.split(/\s+/).filter(Boolean);
  const firstArg = flagsAndRest.findIndex((token) => !token.startsWith('--'));
  const args = firstArg < 0 ? '' : flagsAndRest.slice(firstArg).join(' ');
  if (args.startsWith('[')) {
    try {
      words = (JSON.parse(args) as unknown[]).map(String);
    } catch {
      words = args.split(/\s+/);
    }
  } else {
    words = args.split(/\s+/).filter(Boolean);
  }
  for (const source of words.slice(0, -1)) {
    const expanded = unquote(expand(source, vars, escapeChar));
    if (expanded.includes('$'))
      return `ADD source ${source} uses a variable that cannot be checked`;
    if (/^[a-z][a-z0-9+.-]*:\/\//i.test(expanded) || /^git@/i.test(expanded)) {
      return `ADD ${expanded} fetches from the network`;
    }
  }
  return undefined;
}

/** ${NAME}, $NAME, ${NAME:-default}: unknown names stay as they are, so the caller sees the `$`. */
function expand(text: string, vars: Map<string, string>, escapeChar: string): string {
  return text.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+]([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (match, braced, alt, bare, offset: number) => {
      if (offset > 0 && text[offset - 1] === escapeChar) return match;
      const name = (braced ?? bare) as string;
      const value = vars.get(name);
      if (value !== undefined && value !== '') return value;
      if (alt !== undefined && match.includes(':-')) return alt as string;
      return value === '' ? '' : match;
    },
  );
}

function unquote(text: string): string {
  return text.replace(/^["']|["']$/g, '');
}
