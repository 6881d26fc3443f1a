import { describe, expect, it } from 'vitest';
import { hostHintOf } from '../../src/build/blame.js';

const step = (command: string, tail: string) =>
  `STEP 2/2: RUN ${command}\n${command.includes('echo') ? 'printed\n' : ''}Error: building at STEP "RUN ${command}": ${tail}`;

describe('whose fault a failed untrusted build is', () => {
  it.each([
    [
      'a RUN step that prints the words of a full disk',
      `STEP 2/2: RUN echo "no space left on device"; exit 1\nwrite /x: no space left on device\nError: building at STEP "RUN echo "no space left on device"; exit 1": while running runtime: exit status 1`,
    ],
    [
      'a RUN step that names the engine socket',
      step('echo docker.sock subuid /dev/nvidia; exit 1', 'while running runtime: exit status 1'),
    ],
    [
      'a STEP text that quotes an engine error of its own',
      step('echo "x": no space left on device; exit 2', 'while running runtime: exit status 2'),
    ],
    ['a build without any engine error', 'STEP 1/1: FROM x\nsomething failed'],
    [
      'a COPY of a missing source named like an engine file',
      'Error: building at STEP "COPY docker.sock /x": checking on sources under "/var/tmp/cw-build-tmp-1/user/context": copier: stat: "/docker.sock": no such file or directory',
    ],
    [
      'a COPY of a missing source named like a full disk',
      'Error: building at STEP "COPY ["no space left on device", "/x"]": checking on sources under "/c": copier: stat: "/no space left on device": no such file or directory',
    ],
    [
      'a USER that buildah names unquoted',
      'Error: building at STEP "RUN true": unable to find user subuid.docker.sock: no matching entries in passwd file',
      'FROM b\nUSER subuid.docker.sock\nRUN true\n',
    ],
  ])("%s is the context's", async (_what, output, containerfile?: string) => {
    // "/" has room: a RUN step that ran out of it filled what the build may use.
    expect(await hostHintOf(output, '/', 50 * 1024 ** 2, containerfile)).toBeUndefined();
  });

  it.each([
    [
      'a commit on a full disk',
      'Error: committing container for step {...}: copying layers: write /var/lib/x: no space left on device',
      /storage is full/,
    ],
    [
      'runc refusing the ulimits',
      'Error: building at STEP "RUN true": error running container: from /usr/bin/runc creating container: error setting rlimit type 7: operation not permitted',
      /ulimits/,
    ],
  ])("%s is the host's", async (_what, output, hint) => {
    // Less free room than a build may use: the storage really is full. The words of a
    // comment and of a RUN script never reach buildah's error line: they hide nothing.
    const containerfile = '# not an error setting\nFROM b\nRUN echo error setting rlimit type\n';
    expect(await hostHintOf(output, '/', Number.MAX_SAFE_INTEGER, containerfile)).toMatch(hint);
  });

  it("a RUN step out of room on a storage that really is nearly full is the host's", async () => {
    const output =
      `${step('dd if=/dev/zero of=/x', 'while running runtime: exit status 1')}`.replace(
        'Error:',
        'dd: write error: No space left on device\nError:',
      );
    // Free room below what a build may use: the build could not have filled it itself.
    expect(await hostHintOf(output, '/', Number.MAX_SAFE_INTEGER)).toMatch(/storage is full/);
    expect(await hostHintOf(output, '/', 1)).toBeUndefined();
  });
});
