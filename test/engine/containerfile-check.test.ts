import { describe, expect, it } from 'vitest';
import { checkContainerfile, findProblem } from '../../src/engine/containerfile-check.js';
import { WorkerError } from '../../src/errors.js';

const file = (...lines: string[]) => lines.join('\n');

describe('checkContainerfile', () => {
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
    ['an escaped dollar', file('FROM a', 'RUN echo \\$HOME')],
  ])('accepts %s', (_, text) => {
    expect(findProblem(text)).toBeUndefined();
  });

  it.each([
    ['RUN --network=host', file('FROM a', 'RUN --network=host curl x')],
    ['lower-case run', file('FROM a', 'run --network=host curl x')],
    ['a flag value in quotes', file('FROM a', 'RUN --network="host" curl x')],
    ['a separate flag value', file('FROM a', 'RUN --network host curl x')],
    [
      'a flag on a continued line',
      file('FROM a', 'RUN \\', '  # a comment inside', '  --network=host curl x'),
    ],
    ['an ARG default', file('ARG NET=host', 'FROM a', 'RUN --network=$NET curl x')],
    ['a braced ARG', file('FROM a', 'ARG NET=host', `RUN --network=\${NET} curl x`)],
    ['an ARG without a value', file('FROM a', 'ARG NET', 'RUN --network=$NET curl x')],
    ['an unknown variable', file('FROM a', 'RUN --network=$UNSET curl x')],
    ['a cache mount', file('FROM a', 'RUN --mount=type=cache,target=/root/.cache pip install x')],
    ['a secret mount', file('FROM a', 'RUN --mount=type=secret,id=key cat /run/secrets/key')],
    ['an ssh mount', file('FROM a', 'RUN --mount=target=/s,type=ssh true')],
    ['--security=insecure', file('FROM a', 'RUN --security=insecure true')],
    ['an unknown RUN flag', file('FROM a', 'RUN --device=/dev/fuse true')],
    ['ADD of a URL', file('FROM a', 'ADD https://example.org/x.tar.gz /x')],
    ['ADD of a git repository', file('FROM a', 'ADD git@github.com:o/r.git /src')],
    ['ADD of a URL in JSON form', file('FROM a', 'ADD ["http://example.org/x", "/x"]')],
    ['ADD of a URL through an ARG', file('FROM a', 'ARG SRC=https://example.org/x', 'ADD $SRC /x')],
    ['an ONBUILD RUN', file('FROM a', 'ONBUILD RUN --network=host true')],
    ['a syntax directive', file('# syntax=docker/dockerfile:1', 'FROM a')],
    [
      'the backtick escape directive',
      file('# escape=`', 'FROM a', 'RUN `', '  --network=host true'),
    ],
  ])('rejects %s', (_, text) => {
    expect(findProblem(text)).toBeDefined();
  });

  it('throws BUILD_CONTEXT_REJECTED, not retryable, naming the file and the problem', () => {
    let error: unknown;
    try {
      checkContainerfile(file('FROM a', 'RUN --network=host true'), 'Dockerfile');
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(WorkerError);
    expect(error).toMatchObject({ code: 'BUILD_CONTEXT_REJECTED', retryable: false });
    expect((error as Error).message).toMatch(/Dockerfile.*--network=host/);
  });
});
