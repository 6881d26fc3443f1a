import { Config, Errors, Flags } from '@oclif/core';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { BaseCommand } from '../../src/cli/base-command.js';
import { durationFlag, positiveNumberFlag, sizeFlag } from '../../src/cli/flag-types.js';
import { WorkerError } from '../../src/errors.js';

// The output every command shares, run in-process through oclif as the CLI runs it:
// what lands on stdout and stderr, and the exit code.

let config: Config;
beforeAll(async () => {
  config = await Config.load(import.meta.dirname);
}, 60_000);

/** What a command does: throw, print a result, or choose its exit code. */
let behaviour: (command: Probe) => void | Promise<void> = () => undefined;

class Probe extends BaseCommand {
  static override flags = {
    json: Flags.boolean({ default: false }),
    memory: Flags.integer({ min: 1 }),
    size: sizeFlag(),
    timeout: durationFlag(),
    cpus: positiveNumberFlag(),
  };
  async run(): Promise<void> {
    await this.parse(Probe);
    await behaviour(this);
  }
  say(text: string) {
    this.progress(text);
  }
  done(json: Record<string, unknown>, text: string) {
    this.result(json, text);
  }
  quit(code: number) {
    this.exit(code);
  }
}

class NoJson extends BaseCommand {
  async run(): Promise<void> {
    await this.parse(NoJson);
  }
}

async function run(argv: string[], command: typeof Probe | typeof NoJson = Probe) {
  const stdout: string[] = [];
  const stderr: string[] = [];
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk) => {
    stdout.push(String(chunk));
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk) => {
    stderr.push(String(chunk));
    return true;
  });
  let exitCode = 0;
  try {
    await command.run(argv, config);
  } catch (error) {
    // oclif's own errors are printed by its handler, after the command: none here.
    if (!(error instanceof Errors.CLIError || error instanceof Errors.ExitError)) throw error;
    exitCode = error.oclif.exit ?? 1;
  } finally {
    vi.restoreAllMocks();
  }
  return { stdout: stdout.join(''), stderr: stderr.join(''), exitCode };
}

describe('the base command', () => {
  afterEach(() => {
    behaviour = () => undefined;
  });

  it('--json: an error is one JSON object on stdout, its words on stderr, its exit code', async () => {
    behaviour = () => {
      throw new WorkerError('CONFIG_INVALID', 'no NSQ to take tasks from', { hint: 'pass one' });
    };
    const result = await run(['--json']);
    expect(result.exitCode).toBe(2);
    expect(result.stdout.endsWith('\n')).toBe(true);
    expect(JSON.parse(result.stdout)).toEqual({
      status: 'error',
      fault: 'worker',
      error: {
        code: 'CONFIG_INVALID',
        message: 'no NSQ to take tasks from',
        retryable: false,
        hint: 'pass one',
      },
    });
    expect(result.stderr).toBe('Error: no NSQ to take tasks from\nhint: pass one\n');
  });

  it('--json: an invalid task is "invalid", the task\'s fault; anything else exits 1', async () => {
    behaviour = () => {
      throw new WorkerError('TASK_INVALID', 'task field "uuid": missing');
    };
    const invalid = await run(['--json']);
    expect(invalid.exitCode).toBe(2);
    expect(JSON.parse(invalid.stdout)).toMatchObject({
      status: 'invalid',
      fault: 'task',
      error: { code: 'TASK_INVALID', message: 'task field "uuid": missing' },
    });
    behaviour = () => {
      throw new Error('something broke');
    };
    const broken = await run(['--json']);
    expect(broken.exitCode).toBe(1);
    expect(JSON.parse(broken.stdout)).toMatchObject({
      status: 'error',
      fault: 'worker',
      error: { code: 'INTERNAL', message: 'something broke' },
    });
  });

  it("--json: a bad command line is an error object too, with oclif's exit code", async () => {
    const unknown = await run(['--json', '--bogus']);
    expect(unknown.exitCode).toBe(2);
    expect(JSON.parse(unknown.stdout)).toMatchObject({
      status: 'error',
      error: { code: 'CONFIG_INVALID', message: expect.stringContaining('--bogus') },
    });
    const low = await run(['--memory', '0', '--json']);
    expect(JSON.parse(low.stdout)).toMatchObject({
      error: { message: expect.stringContaining('--memory') },
    });
    // The worker's own flag types are the command line's fault too.
    for (const argv of [
      ['--size', 'abc'],
      ['--timeout', '5x'],
      ['--cpus', '-1'],
    ]) {
      const bad = await run([...argv, '--json']);
      expect(bad.exitCode, argv.join(' ')).toBe(2);
      expect(JSON.parse(bad.stdout)).toMatchObject({
        error: { code: 'CONFIG_INVALID', message: expect.stringContaining(argv[0] ?? '') },
      });
      expect((await run(argv)).exitCode, argv.join(' ')).toBe(2);
    }
    // After --, --json is an argument, not the flag.
    const after = await run(['--bogus', '--', '--json']);
    expect(after.stdout).toBe('');
  });

  it('without --json, an error is only words on stderr', async () => {
    behaviour = () => {
      throw new WorkerError('TASK_INVALID', 'task field "uuid": missing');
    };
    const result = await run([]);
    expect(result).toEqual({
      stdout: '',
      stderr: 'Error: task field "uuid": missing\n',
      exitCode: 2,
    });
  });

  it('a command without --json does not take one', async () => {
    const result = await run(['--json'], NoJson);
    expect(result.exitCode).toBe(2);
    expect(result.stdout).toBe('');
  });

  it('--json: the result is one line on stdout and progress goes to stderr', async () => {
    behaviour = (command) => {
      command.say('> step\n');
      command.done({ status: 'done' }, 'all done\n');
    };
    expect(await run(['--json'])).toEqual({
      stdout: '{"status":"done"}\n',
      stderr: '> step\n',
      exitCode: 0,
    });
    expect(await run([])).toEqual({ stdout: '> step\nall done\n', stderr: '', exitCode: 0 });
  });

  it('an exit the command chose prints nothing more, even with --json', async () => {
    behaviour = (command) => {
      command.done({ ready: false }, 'not ready\n');
      command.quit(1);
    };
    expect(await run(['--json'])).toEqual({
      stdout: '{"ready":false}\n',
      stderr: '',
      exitCode: 1,
    });
  });
});
