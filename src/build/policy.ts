import { WorkerError } from '../errors.js';
import {
  argumentList,
  decodeContainerfile,
  extractFlags,
  type Instruction,
  leadingJsonArray,
  ParseProblem,
  parseContainerfile,
} from './parse.js';

/**
 * `strict` (submissions) allows a short list of instructions and flags, everything else is
 * refused. `trusted` (the problem's workflow) refuses only what reaches the host or its
 * network: the builder honours a Containerfile's `RUN --network=host` over the CLI's
 * `--network=none`, fetches `ADD <url>` itself, keeps cache mounts between builds, and
 * buildah < 1.35.1 follows links of a bind mount's source on the host (CVE-2024-1753).
 */
export type BuildPolicy = 'strict' | 'trusted';

const HINTS: Record<BuildPolicy, string> = {
  strict:
    'a submission Containerfile may use FROM (images on this host, or earlier stages), COPY (from the context, or --from=<earlier stage>), RUN (no flags but --mount=type=tmpfs[,target=<path>][,tmpfs-size=<up to 1g>]), ENV, ARG, WORKDIR, USER, LABEL, ENTRYPOINT and CMD; no ADD (use COPY), no heredocs, no "$" in flags, FROM or COPY sources',
  trusted:
    'build steps run without network: no RUN --network other than none, no cache/secret/ssh mounts, no --security=insecure, no ADD from a URL or git, no "$" in flags or ADD sources, no heredocs',
};

export function checkContainerfile(
  content: string | Uint8Array,
  fileName = 'Containerfile',
  policy: BuildPolicy = 'strict',
): void {
  const problem = findProblem(content, policy);
  if (problem) {
    throw new WorkerError(
      'BUILD_CONTEXT_REJECTED',
      `The build context's ${fileName} is not allowed (${policy} policy): ${problem}`,
      { hint: HINTS[policy] },
    );
  }
}

/** The first reason the file is refused, starting "line N: ", or undefined when it is allowed. */
export function findProblem(
  content: string | Uint8Array,
  policy: BuildPolicy = 'strict',
): string | undefined {
  try {
    const text = typeof content === 'string' ? content : decodeContainerfile(content);
    const { instructions } = parseContainerfile(text);
    const state: StrictState = { stages: [], seenFrom: false };
    for (const instruction of instructions) {
      const problem =
        policy === 'strict' ? checkStrict(instruction, state) : checkTrusted(instruction, false);
      if (problem) return `line ${instruction.line}: ${problem}`;
    }
    if (policy === 'strict' && !state.seenFrom) return 'line 1: there is no FROM instruction';
    return undefined;
  } catch (error) {
    if (error instanceof ParseProblem) {
      return error.line > 0 ? `line ${error.line}: ${error.message}` : error.message;
    }
    throw error;
  }
}

const KNOWN = new Set([
  'ADD',
  'ARG',
  'CMD',
  'COPY',
  'ENTRYPOINT',
  'ENV',
  'EXPOSE',
  'FROM',
  'HEALTHCHECK',
  'LABEL',
  'MAINTAINER',
  'ONBUILD',
  'RUN',
  'SHELL',
  'STOPSIGNAL',
  'USER',
  'VOLUME',
  'WORKDIR',
]);

/** Only ASCII keywords: Go lower-cases some other letters to ASCII (U+0130 to "i"), JavaScript others. */
function keywordOf(instruction: Instruction): string | undefined {
  const upper = /^[A-Za-z]+$/.test(instruction.keyword) ? instruction.keyword.toUpperCase() : '';
  return KNOWN.has(upper) ? upper : undefined;
}

const describe = (instruction: Instruction) => JSON.stringify(instruction.keyword.slice(0, 40));

/** Could hold a heredoc for some builder: BuildKit removes quotes, escapes and variables before it looks for `<<WORD`. */
const HEREDOC = /<[^ \t<]*</;

// ---- strict -------------------------------------------------------------------------

interface StrictState {
  /** Stage names as written (lower case) in order; an unnamed stage is ''. */
  stages: string[];
  seenFrom: boolean;
}

const STRICT_ALLOWED = new Set([
  'FROM',
  'COPY',
  'RUN',
  'ENV',
  'ARG',
  'WORKDIR',
  'USER',
  'LABEL',
  'ENTRYPOINT',
  'CMD',
]);

const WHY_REFUSED: Record<string, string> = {
  ADD: 'ADD is not allowed (use COPY for files of the context)',
  VOLUME: 'VOLUME is not allowed (an image volume becomes a host volume that outlives the task)',
  ONBUILD: 'ONBUILD is not allowed',
};

function checkStrict(instruction: Instruction, state: StrictState): string | undefined {
  const keyword = keywordOf(instruction);
  if (!keyword) return `${describe(instruction)} is not an instruction a submission may use`;
  if (!STRICT_ALLOWED.has(keyword)) {
    return WHY_REFUSED[keyword] ?? `${keyword} is not an instruction a submission may use`;
  }
  if (!state.seenFrom && keyword !== 'FROM' && keyword !== 'ARG') {
    return `${keyword} before the first FROM`;
  }
  const rest = instruction.rest;
  const json = leadingJsonArray(extractFlags(rest).args);
  if (json && json.after !== '') {
    // buildah would drop the text after the array; a reader that did not would see other words.
    return `${keyword} ["..."] followed by more text is not allowed (nothing may follow a JSON array)`;
  }
  if ((keyword === 'RUN' || keyword === 'COPY') && HEREDOC.test(rest)) {
    return `${keyword} with "<<" (a heredoc) is not allowed`;
  }
  switch (keyword) {
    case 'FROM':
      return strictFrom(rest, state);
    case 'COPY':
      return strictCopy(rest, state);
    case 'RUN':
      return strictRun(rest);
    default:
      return undefined;
  }
}

const IMAGE_REF = /^[A-Za-z0-9][A-Za-z0-9._/:@-]*$/;
const STAGE_NAME = /^[a-z][a-z0-9._-]*$/;
const TRANSPORT =
  /^(containers-storage|docker-archive|docker-daemon|oci|oci-archive|dir|tarball|sif|ostree):|:\/\//i;

/** Whether buildah would read the reference as a transport, not an image name. */
export function hasTransport(image: string): boolean {
  return TRANSPORT.test(image);
}

function strictFrom(rest: string, state: StrictState): string | undefined {
  if (rest.includes('$')) return 'FROM with "$" (a variable) is not allowed';
  const words = rest.split(/[ \t]+/).filter(Boolean);
  if (words.some((w) => w.startsWith('-'))) return 'FROM flags (--platform, ...) are not allowed';
  const [image, as, name, ...more] = words;
  if (!image || more.length > 0 || (as !== undefined && (as.toUpperCase() !== 'AS' || !name))) {
    return 'FROM must read "FROM <image>" or "FROM <image> AS <name>"';
  }
  // buildah matches stage names byte for byte and docker lower-cases them: a name already in
  // lower case means the same stage to both, and any other spelling of it is an image.
  const stage = name ?? '';
  if (name !== undefined && (!STAGE_NAME.test(stage) || state.stages.includes(stage))) {
    return `FROM ... AS ${name}: a stage name is a new lower-case word (letters, digits, ._-)`;
  }
  const earlierStage = state.stages.includes(image);
  if (!earlierStage && image.toLowerCase() !== 'scratch') {
    if (!IMAGE_REF.test(image)) return `FROM ${image}: not an image name`;
    // buildah reads these as a transport (containers-storage:@<id> is any image by its ID).
    if (hasTransport(image)) return `FROM ${image}: a transport prefix is not allowed`;
    // The base store's copy of an image keeps no registry digest: buildah would not find it.
    if (image.includes('@'))
      return `FROM ${image}: a digest is not allowed; name the base by its tag`;
    // podman also resolves a bare hex word as an image ID prefix: any image on the host.
    if (/^(sha256:)?[0-9a-f]+$/i.test(image)) return `FROM ${image}: an image ID is not allowed`;
    if (/(^|\/)compute-worker\//i.test(image)) {
      return `FROM ${image}: the images this worker built from other contexts are not allowed`;
    }
  }
  state.stages.push(stage);
  state.seenFrom = true;
  return undefined;
}

function strictCopy(rest: string, state: StrictState): string | undefined {
  const { flags, args } = extractFlags(rest);
  for (const flag of flags) {
    const from = /^--from=([A-Za-z0-9._-]+)$/.exec(flag);
    if (from) {
      // Byte for byte, as buildah matches it (stage names are lower case: see strictFrom).
      const ref = from[1] as string;
      const current = state.stages.length - 1;
      const index = /^[0-9]+$/.test(ref) ? Number(ref) : state.stages.indexOf(ref);
      if (!(index >= 0 && index < current)) {
        return `COPY ${flag}: --from must name an earlier stage (by name or index), not an image`;
      }
      continue;
    }
    // Literal ids and modes only: a name would be looked up in the image's /etc/passwd.
    if (/^--chown=[0-9]{1,10}(:[0-9]{1,10})?$/.test(flag) || /^--chmod=[0-7]{3,4}$/.test(flag)) {
      continue;
    }
    return `COPY flag ${printable(flag)} is not allowed (only --from=<earlier stage>, --chown=<uid>[:<gid>], --chmod=<octal>)`;
  }
  const { words } = argumentList(args);
  if (words.length < 2) return 'COPY needs a source and a destination';
  const source = words.slice(0, -1).find((w) => w.includes('$'));
  if (source !== undefined) return `COPY source ${printable(source)} has a "$" (a variable)`;
  return undefined;
}

// buildah names the size tmpfs-size, BuildKit size.
const TMPFS_KEYS = new Set(['type', 'target', 'dst', 'destination', 'size', 'tmpfs-size']);
const MAX_TMPFS_BYTES = 1024 ** 3;
const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

function strictRun(rest: string): string | undefined {
  const { flags } = extractFlags(rest);
  for (const flag of flags) {
    const problem = strictMount(flag);
    if (problem) return `RUN flag ${printable(flag)}: ${problem}`;
  }
  return undefined;
}

function strictMount(flag: string): string | undefined {
  const m = /^--mount=(.*)$/.exec(flag);
  if (!m) return 'only --mount=type=tmpfs is allowed';
  const seen = new Set<string>();
  for (const part of (m[1] as string).split(',')) {
    const kv = /^([a-z-]+)=([A-Za-z0-9/._-]+)$/.exec(part);
    const key = kv?.[1] as string;
    if (!kv || !TMPFS_KEYS.has(key) || seen.has(key)) {
      return 'only --mount=type=tmpfs[,target=<path>][,tmpfs-size=<bytes>] is allowed';
    }
    seen.add(key);
    if (key === 'type' && kv[2] !== 'tmpfs') return 'only --mount=type=tmpfs is allowed';
    if (key.endsWith('size')) {
      const size = /^([0-9]{1,12})([kmg]?)$/i.exec(kv[2] as string);
      const bytes = size ? Number(size[1]) * (UNITS[(size[2] as string).toLowerCase()] ?? 0) : 0;
      if (!size || bytes > MAX_TMPFS_BYTES) {
        return 'a tmpfs size is a number of bytes (k, m or g) up to 1g';
      }
    }
  }
  if (!seen.has('type')) return 'only --mount=type=tmpfs is allowed (the default type is bind)';
  return undefined;
}

// ---- trusted ------------------------------------------------------------------------

function checkTrusted(instruction: Instruction, inOnbuild: boolean): string | undefined {
  const keyword = keywordOf(instruction);
  if (!keyword) return `${describe(instruction)} is not an instruction`;
  const rest = instruction.rest;
  if (['RUN', 'COPY', 'ADD'].includes(keyword) && HEREDOC.test(rest)) {
    return `${keyword} with "<<" (a heredoc) is not allowed`;
  }
  switch (keyword) {
    case 'ONBUILD': {
      if (inOnbuild) return 'ONBUILD ONBUILD is not allowed';
      const m = /^([^\t\v\f\r ]+)[\t\v\f\r ]*([\s\S]*)$/.exec(rest);
      if (!m) return 'ONBUILD needs an instruction';
      return checkTrusted(
        { line: instruction.line, keyword: m[1] as string, rest: m[2] as string },
        true,
      );
    }
    case 'RUN':
      return trustedRun(rest);
    case 'ADD':
      return trustedAdd(rest);
    case 'COPY':
    case 'FROM':
      return literalFlags(keyword, extractFlags(rest).flags);
    default:
      return undefined;
  }
}

/** The builder expands variables in flags (`${X:+cache}`) and removes quotes: only literal flags are checked. */
function literalFlags(keyword: string, flags: string[]): string | undefined {
  const bad = flags.find((f) => /[$"'\\`]/.test(f) || /[^\x21-\x7e]/.test(f));
  return bad === undefined
    ? undefined
    : `${keyword} flag ${printable(bad)}: a "$", a quote, an escape or a non-ASCII character in a flag is not allowed`;
}

function trustedRun(rest: string): string | undefined {
  const { flags } = extractFlags(rest);
  const literal = literalFlags('RUN', flags);
  if (literal) return literal;
  for (const flag of flags) {
    const eq = flag.indexOf('=');
    const name = (eq < 0 ? flag : flag.slice(0, eq)).toLowerCase();
    const value = eq < 0 ? '' : flag.slice(eq + 1);
    if (name === '--network') {
      if (value.toLowerCase() !== 'none') return `RUN --network=${value} (only none is allowed)`;
    } else if (name === '--mount') {
      const types = value
        .split(',')
        .filter((p) => /^type=/i.test(p))
        .map((p) => p.slice(5).toLowerCase());
      if (types.length > 1) return `RUN --mount=${value}: more than one type`;
      const type = types[0] ?? 'bind';
      if (['cache', 'ssh', 'secret'].includes(type)) return `RUN --mount=type=${type}`;
    } else if (name === '--security') {
      if (value.toLowerCase() !== 'sandbox') return `RUN --security=${value}`;
    } else {
      return `unknown RUN flag ${name}`;
    }
  }
  return undefined;
}

function trustedAdd(rest: string): string | undefined {
  const { flags, args } = extractFlags(rest);
  const literal = literalFlags('ADD', flags);
  if (literal) return literal;
  const { words } = argumentList(args);
  for (const source of words.slice(0, -1)) {
    if (source.includes('$')) return `ADD source ${printable(source)} has a "$" (a variable)`;
    const plain = source.replace(/["'\\`]/g, '');
    if (/^[a-z][a-z0-9+.-]*:/i.test(plain) || /^git@/i.test(plain) || plain.includes('://')) {
      return `ADD ${printable(source)} fetches from the network`;
    }
  }
  return undefined;
}

function printable(text: string): string {
  const shown = text.length > 80 ? `${text.slice(0, 80)}...` : text;
  return JSON.stringify(shown);
}
