/**
 * Reads a Containerfile the way buildah's parser (imagebuilder's copy of the Docker parser)
 * does, so the policy sees the same instructions and flags the builder will run: lines end
 * at LF (a CR before it is dropped), continuations are joined with nothing between them,
 * comment and blank lines inside a continuation are skipped, flags are split on any byte
 * Go's unicode.IsSpace takes for a space. Where the parsers of buildah and BuildKit differ
 * (parser directives), anything either would read as a directive is reported.
 */

export interface Instruction {
  /** 1-based line where the instruction starts. */
  line: number;
  /** As written: the policy compares it case-insensitively. */
  keyword: string;
  /** Everything after the keyword, continuations joined. */
  rest: string;
}

export interface ParsedFile {
  escapeChar: '\\' | '`';
  instructions: Instruction[];
}

export class ParseProblem extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(message);
  }
}

/** Characters that would make the builder's reading differ from ours: control characters but tab, line and paragraph separators, stray BOMs. */
function forbiddenChar(line: string): number | undefined {
  for (const char of line) {
    const code = char.codePointAt(0) as number;
    if (
      (code < 0x20 && code !== 0x09) ||
      (code >= 0x7f && code <= 0x9f) ||
      [0x2028, 0x2029, 0xfeff, 0xfffd].includes(code)
    ) {
      return code;
    }
  }
  return undefined;
}

/** Any line BuildKit or buildah could take for a parser directive. */
const DIRECTIVE_LIKE = /^#[ \t]*[A-Za-z][A-Za-z0-9]*[ \t]*=/;
const ESCAPE_DIRECTIVE = /^#[ \t]*escape[ \t]*=[ \t]*([\\`])[ \t]*$/i;

/** Go's unicode.IsSpace on a code point (the parser trims lines with it). */
const GO_SPACE = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+/;

/** Decodes the file's bytes, refusing what is not UTF-8 (Go would read the bytes differently). */
export function decodeContainerfile(bytes: Uint8Array): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    throw new ParseProblem(0, 'the file is not valid UTF-8');
  }
}

export function parseContainerfile(text: string): ParsedFile {
  const lines = (text.startsWith('\ufeff') ? text.slice(1) : text).split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i] as string;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    lines[i] = line;
    const bad = forbiddenChar(line);
    if (bad !== undefined) {
      const code = bad.toString(16).padStart(4, '0');
      throw new ParseProblem(i + 1, `the character U+${code} is not allowed in a Containerfile`);
    }
  }
  const escapeChar = readDirectives(lines);
  return { escapeChar, instructions: logicalLines(lines, escapeChar) };
}

function readDirectives(lines: string[]): '\\' | '`' {
  let escapeChar: '\\' | '`' = '\\';
  let seenEscape = false;
  for (let i = 0; i < lines.length; i++) {
    const line = trimGoSpaceLeft(lines[i] as string);
    if (!DIRECTIVE_LIKE.test(line)) break;
    const directive = ESCAPE_DIRECTIVE.exec(line);
    if (!directive || seenEscape) {
      throw new ParseProblem(
        i + 1,
        `the parser directive "${line}" is not allowed (only one "# escape=\\" or "# escape=\`" is)`,
      );
    }
    seenEscape = true;
    escapeChar = directive[1] as '\\' | '`';
  }
  return escapeChar;
}

function trimGoSpaceLeft(text: string): string {
  return text.replace(GO_SPACE, '');
}

function isComment(line: string): boolean {
  return trimGoSpaceLeft(line).startsWith('#');
}

function logicalLines(lines: string[], escapeChar: string): Instruction[] {
  const continuation = new RegExp(`${escapeChar === '`' ? '`' : '\\\\'}[ \\t]*$`);
  const trimContinuation = (text: string): [string, boolean] =>
    continuation.test(text) ? [text.replace(continuation, ''), false] : [text, true];
  const out: Instruction[] = [];
  for (let i = 0; i < lines.length; i++) {
    const start = i + 1;
    const first = trimGoSpaceLeft(lines[i] as string);
    let [line, ended] = trimContinuation(first.startsWith('#') ? '' : first);
    if (ended && line === '') continue;
    while (!ended && i + 1 < lines.length) {
      i++;
      const next = lines[i] as string;
      if (isComment(next) || trimGoSpaceLeft(next) === '') continue;
      const [part, end] = trimContinuation(next);
      line += part;
      ended = end;
    }
    const trimmed = line.replace(GO_SPACE, '').replace(/[\t\n\v\f\r \u0085\u00a0]+$/, '');
    const m = /^([^\t\v\f\r ]+)[\t\v\f\r ]*([\s\S]*)$/.exec(trimmed);
    if (m) out.push({ line: start, keyword: m[1] as string, rest: m[2] as string });
  }
  return out;
}

const isGoByteSpace = (b: number) =>
  (b >= 0x09 && b <= 0x0d) || b === 0x20 || b === 0x85 || b === 0xa0;

/**
 * A port of the parser's extractBuilderFlags: the leading `--` words of an instruction's
 * arguments, quotes and backslashes removed, read byte by byte as Go does (so a byte 0x85
 * or 0xA0 inside a UTF-8 character separates words). Bytes over 0x7F become U+0080..U+00FF,
 * as Go's rune(byte) makes them; the policy accepts ASCII flags only.
 */
export function extractFlags(rest: string): { flags: string[]; args: string } {
  const bytes = Buffer.from(rest, 'utf8');
  const flags: string[] = [];
  let phase: 'spaces' | 'word' | 'quote' = 'spaces';
  let word = '';
  let quote = 0;
  let blankOk = false;
  for (let pos = 0; pos <= bytes.length; pos++) {
    const end = pos === bytes.length;
    let ch = end ? 0 : (bytes[pos] as number);
    if (phase === 'spaces') {
      if (end) break;
      if (isGoByteSpace(ch)) continue;
      if (ch !== 0x2d || pos + 1 === bytes.length || bytes[pos + 1] !== 0x2d) {
        return { flags, args: bytes.subarray(pos).toString('utf8') };
      }
      phase = 'word';
    }
    if (end) {
      if (word !== '--' && (blankOk || word.length > 0)) flags.push(word);
      break;
    }
    if (phase === 'word') {
      if (isGoByteSpace(ch)) {
        phase = 'spaces';
        if (word === '--') return { flags, args: bytes.subarray(pos).toString('utf8') };
        if (blankOk || word.length > 0) flags.push(word);
        word = '';
        blankOk = false;
        continue;
      }
      if (ch === 0x27 || ch === 0x22) {
        quote = ch;
        blankOk = true;
        phase = 'quote';
        continue;
      }
      if (ch === 0x5c) {
        if (pos + 1 === bytes.length) continue;
        pos++;
        ch = bytes[pos] as number;
      }
      word += String.fromCharCode(ch);
      continue;
    }
    if (ch === quote) {
      phase = 'word';
      continue;
    }
    if (ch === 0x5c) {
      if (pos + 1 === bytes.length) {
        phase = 'word';
        continue;
      }
      pos++;
      ch = bytes[pos] as number;
    }
    word += String.fromCharCode(ch);
  }
  return { flags, args: '' };
}

/**
 * The JSON array an argument text starts with, and the text after it: buildah's parser
 * decodes the first JSON value and ignores what follows, so `["a"] b` is the array ["a"].
 * Undefined when the text does not start with a JSON array of strings.
 */
export function leadingJsonArray(args: string): { words: string[]; after: string } | undefined {
  if (!args.startsWith('[')) return undefined;
  for (let end = args.indexOf(']'); end >= 0; end = args.indexOf(']', end + 1)) {
    let parsed: unknown;
    try {
      parsed = JSON.parse(args.slice(0, end + 1));
    } catch {
      continue;
    }
    if (!Array.isArray(parsed) || !parsed.every((w) => typeof w === 'string')) return undefined;
    return { words: parsed, after: args.slice(end + 1) };
  }
  return undefined;
}

/** An instruction's arguments: a JSON array of strings (escapes decoded) when it starts with one, else words. */
export function argumentList(args: string): { json: boolean; words: string[] } {
  const json = leadingJsonArray(args);
  if (json) return { json: true, words: json.words };
  return { json: false, words: args.split(/[\t\v\f\r \u0085\u00a0]+/).filter(Boolean) };
}
