import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { extractFlags } from '../../src/build/parse.js';
import { checkContainerfile, findProblem } from '../../src/build/policy.js';
import { BUSYBOX_CONTAINERFILE } from '../../src/engine/probe-context.js';
import { WorkerError } from '../../src/errors.js';

const file = (...lines: string[]) => lines.join('\n');
const root = join(import.meta.dirname, '..', '..');
const corpusDir = join(import.meta.dirname, 'containerfile-corpus');
const corpus = Object.entries(
  JSON.parse(readFileSync(join(corpusDir, 'index.json'), 'utf8')) as Record<
    string,
    { line: number; match: string }
  >,
);

function rejection(content: string | Uint8Array, policy: 'strict' | 'trusted'): WorkerError {
  try {
    checkContainerfile(content, 'Containerfile', policy);
  } catch (error) {
    if (error instanceof WorkerError) return error;
    throw error;
  }
  throw new Error('the Containerfile was accepted');
}

describe('the strict policy (submissions)', () => {
  it('has a corpus of bypass attempts', () => {
    expect(corpus.length).toBeGreaterThan(60);
  });

  it.each(corpus)('refuses %s, naming the line', (name, expected) => {
    const error = rejection(readFileSync(join(corpusDir, name)), 'strict');
    expect(error).toMatchObject({ code: 'BUILD_CONTEXT_REJECTED', retryable: false });
    expect(error.message).toContain(expected.match);
    if (expected.line > 0) expect(error.message).toContain(`: line ${expected.line}: `);
  });

  it.each([
    ['the example problem', readFileSync(join(root, 'examples/problem/Containerfile'), 'utf8')],
    [
      'the example submission',
      readFileSync(join(root, 'examples/submission/Containerfile'), 'utf8'),
    ],
    ['the busybox test context', file(...BUSYBOX_CONTAINERFILE)],
    [
      'the script runner test context',
      file(
        ...BUSYBOX_CONTAINERFILE,
        'RUN mkdir -p /tmp /data && chmod 1777 /tmp',
        'COPY runner.sh /runner/runner.sh',
        'USER 1000:1000',
        'ENTRYPOINT ["/bin/sh", "/runner/runner.sh"]',
      ),
    ],
    [
      'stages, tmpfs mounts and COPY --from a stage',
      file(
        'ARG VERSION=1',
        'FROM python:3.11 AS deps',
        'RUN --mount=type=tmpfs,target=/scratch --mount=type=tmpfs,dst=/t,tmpfs-size=64m pip list',
        'RUN --mount=destination=/u,size=1g,type=tmpfs true',
        'FROM deps',
        'FROM scratch AS final',
        'COPY --from=deps /usr/lib /usr/lib',
        'COPY --from=1 --chown=1000:1000 --chmod=0644 /etc/hostname /x',
        'ENV A=$VERSION B="x y"',
        `LABEL org.example.v="\${VERSION}"`,
        'WORKDIR /w',
        'USER 1000',
        'CMD ["run"]',
      ),
    ],
    [
      'comments, blank lines, continuations, CRLF and lower case',
      '# a comment\r\nfrom scratch\r\n\r\ncopy a \\\r\n  # inside\r\n  /b\r\nrun echo a \\\r\n  && echo $HOME\r\n',
    ],
    ['the backtick escape directive', file('# escape=`', 'FROM scratch', 'RUN echo a `', '  b')],
    ['a BOM', '\ufeffFROM scratch\nRUN true\n'],
    ['COPY in JSON form', file('FROM scratch', 'COPY ["a b", "c", "/d/"]')],
    ['RUN -- (the end of flags)', file('FROM scratch', 'RUN -- --network=host')],
    ['a shift without heredoc', file('FROM scratch', 'RUN echo $((1 < 2))')],
  ])('accepts %s', (_, text) => {
    expect(findProblem(text, 'strict')).toBeUndefined();
  });

  it('is the default policy', () => {
    expect(findProblem(file('FROM scratch', 'ADD a /b'))).toMatch(/ADD is not allowed/);
  });
});

describe('the trusted policy (the workflow)', () => {
  it.each([
    [
      'plain instructions',
      file(
        'FROM scratch',
        'COPY busybox /bin/busybox',
        'RUN ["/bin/busybox","--install","-s","/bin"]',
      ),
    ],
    ['RUN --network=none', file('FROM scratch', 'RUN --network=none make')],
    ['FROM --platform', file('FROM --platform=linux/amd64 python:3.11', 'RUN pip list')],
    [
      'bind and tmpfs mounts',
      file(
        'FROM a AS b',
        'FROM c',
        'RUN --mount=type=bind,from=b,target=/x --mount=type=tmpfs,target=/t ls',
      ),
    ],
    [
      'ADD of local files',
      file('FROM a', 'ADD --chown=1000:1000 model.tar.gz /opt/', 'ADD ["a b", "/c/"]'),
    ],
    ['--security=sandbox', file('FROM a', 'RUN --security=sandbox true')],
    ['an escaped dollar in a command', file('FROM a', 'RUN echo \\$HOME')],
    [
      'VOLUME, EXPOSE and COPY --from an image',
      file('FROM a', 'VOLUME /v', 'EXPOSE 80', 'COPY --from=b:1 /x /y'),
    ],
    ['the example problem', readFileSync(join(root, 'examples/problem/Containerfile'), 'utf8')],
  ])('accepts %s', (_, text) => {
    expect(findProblem(text, 'trusted')).toBeUndefined();
  });

  it.each([
    ['RUN --network=host', file('FROM a', 'RUN --network=host curl x'), '--network=host'],
    ['lower-case run', file('FROM a', 'run --network=host curl x'), '--network=host'],
    ['a flag value in quotes', file('FROM a', 'RUN --network="host" curl x'), '--network=host'],
    ['a quote left for the builder', file('FROM a', `RUN --network='"'host'"' x`), 'quote'],
    ['a separate flag value', file('FROM a', 'RUN --network host curl x'), '--network'],
    [
      'a flag on a continued line',
      file('FROM a', 'RUN \\', '  # a comment inside', '  --network=host curl x'),
      '--network=host',
    ],
    ['an ARG default', file('ARG NET=host', 'FROM a', 'RUN --network=$NET curl x'), '"$"'],
    ['a braced ARG', file('FROM a', 'ARG NET=host', `RUN --network=\${NET} curl x`), '"$"'],
    [
      'the :+ operator in a mount',
      file('FROM a', 'ARG T=a', `RUN --mount=type=\${T:+cache},target=/c true`),
      '"$"',
    ],
    [
      'the :+ operator in ADD',
      file('FROM a', 'ARG X=a', `ADD \${X:+http://127.0.0.1:9/p} /f`),
      '"$"',
    ],
    ['a quoted URL in ADD', file('FROM a', 'ADD "http://127.0.0.1:9/p" /f'), 'network'],
    [
      'a cache mount',
      file('FROM a', 'RUN --mount=type=cache,target=/root/.cache pip install x'),
      'cache',
    ],
    [
      'a secret mount',
      file('FROM a', 'RUN --mount=type=secret,id=key cat /run/secrets/key'),
      'secret',
    ],
    ['an ssh mount', file('FROM a', 'RUN --mount=target=/s,type=ssh true'), 'ssh'],
    [
      'two mount types',
      file('FROM a', 'RUN --mount=type=bind,type=cache,target=/c true'),
      'more than one type',
    ],
    ['--security=insecure', file('FROM a', 'RUN --security=insecure true'), 'insecure'],
    ['an unknown RUN flag', file('FROM a', 'RUN --device=/dev/fuse true'), '--device'],
    ['ADD of a URL', file('FROM a', 'ADD https://example.org/x.tar.gz /x'), 'network'],
    ['ADD of a git repository', file('FROM a', 'ADD git@github.com:o/r.git /src'), 'network'],
    ['ADD of a URL in JSON form', file('FROM a', 'ADD ["http://example.org/x", "/x"]'), 'network'],
    [
      'ADD of a URL through an ARG',
      file('FROM a', 'ARG SRC=https://example.org/x', 'ADD $SRC /x'),
      '"$"',
    ],
    ['an ONBUILD RUN', file('FROM a', 'ONBUILD RUN --network=host true'), '--network=host'],
    ['a syntax directive', file('# syntax=docker/dockerfile:1', 'FROM a'), 'directive'],
    [
      'the backtick escape directive',
      file('# escape=`', 'FROM a', 'RUN `', '  --network=host true'),
      '--network=host',
    ],
    ['a heredoc', file('FROM a', 'RUN <<EOF', 'echo', 'EOF'), 'heredoc'],
    ['an unknown instruction', file('FROM a', 'FETCH x'), 'not an instruction'],
    ['a NUL byte', file('FROM a', 'RUN true\0'), 'U+0000'],
  ])('refuses %s', (_, text, match) => {
    expect(findProblem(text, 'trusted')).toContain(match);
    expect(findProblem(text, 'strict')).toBeDefined();
  });
});

describe('checkContainerfile', () => {
  it('throws BUILD_CONTEXT_REJECTED, not retryable, naming the file, the line and the problem', () => {
    let error: unknown;
    try {
      checkContainerfile(file('FROM a', 'RUN --network=host true'), 'Dockerfile', 'trusted');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(WorkerError);
    expect(error).toMatchObject({ code: 'BUILD_CONTEXT_REJECTED', retryable: false });
    expect((error as Error).message).toMatch(/Dockerfile.*trusted.*line 2: .*--network=host/);
  });
});

describe('extractFlags (the builder reads flags byte by byte)', () => {
  it.each([
    ['--a=1 --b="x y" cmd', ['--a=1', '--b=x y'], 'cmd'],
    ["--m=ty'p'e=c\\ache rest", ['--m=type=cache'], 'rest'],
    ['-- --network=host', [], ' --network=host'],
    ['["--network=host"]', [], '["--network=host"]'],
    ['--x=\u00e0b c', ['--x=\u00c3'], 'b c'],
  ])('%j', (rest, flags, args) => {
    expect(extractFlags(rest)).toEqual({ flags, args });
  });
});
