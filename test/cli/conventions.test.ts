import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { workerLiveDir, workerTmpDir } from '../../src/config/paths.js';
import { closedPort } from '../support/http-stand-in.js';
import { BIN, hasPodman, ociRuntime, requireEngines } from '../support/worker-process.js';

// What a person types first: help, the version, and a flag with a typo.

const cli = (...args: string[]) =>
  execa('node', [BIN, ...args], { reject: false, env: { NODE_NO_WARNINGS: '1' } });

describe('the command line', () => {
  it('-h, help and help COMMAND show the help', async () => {
    for (const args of [['-h'], ['help'], ['--help']]) {
      const result = await cli(...args);
      expect(result.exitCode, args.join(' ')).toBe(0);
      expect(result.stdout).toContain('USAGE');
      expect(result.stdout).toContain('doctor');
    }
    for (const args of [
      ['help', 'run'],
      ['run', '-h'],
      ['doctor', '-h'],
    ]) {
      const result = await cli(...args);
      expect(result.exitCode, args.join(' ')).toBe(0);
      expect(result.stdout).toContain(
        `$ compute-worker ${args.includes('doctor') ? 'doctor' : 'run'}`,
      );
    }
    const exec = await cli('help', 'task', 'exec');
    expect(exec.exitCode).toBe(0);
    expect(exec.stdout).toContain('$ compute-worker task exec');
  });

  it('version and --version print the version', async () => {
    for (const word of ['version', '--version']) {
      const result = await cli(word);
      expect(result.exitCode, word).toBe(0);
      expect(result.stdout).toMatch(/^compute-worker\/\d+\.\d+\.\d+ /);
    }
  });

  it('a mistyped flag is named with a guess and where the help is, not the whole help', async () => {
    const result = await cli('run', '--nsqd-tcp-adresses', '127.0.0.1:4150');
    expect(result.exitCode).toBe(2);
    expect(result.stderr).toBe(
      'Error: unknown flag --nsqd-tcp-adresses\nhint: did you mean --nsqd-tcp-addresses? every flag: compute-worker run --help',
    );
    expect(result.stdout).toBe('');
    const doctor = await cli('doctor', '--jsn');
    expect(doctor.exitCode).toBe(2);
    expect(doctor.stderr).toContain('did you mean --json?');
    expect(doctor.stderr).not.toContain('USAGE');
    const far = await cli('run', '--zzzzzz');
    expect(far.stderr).not.toContain('did you mean');
    expect(far.stderr).toContain('every flag: compute-worker run --help');
  });

  it('doctor takes the flags of run', async () => {
    const state = await mkdtemp(join(tmpdir(), 'cw-cli-'));
    try {
      const result = await cli(
        'doctor',
        '--json',
        '--state-dir',
        state,
        '--engine-path',
        '/nonexistent/podman',
        '--log-format',
        'json',
        '--metrics-address',
        '9100',
        '--shutdown-grace',
        '1m',
        '--max-attempts',
        '3',
        '--retry-delay',
        '2s',
      );
      // 1: no engine here, on purpose; not 2, a refused command line.
      expect(result.exitCode, result.stderr).toBe(1);
      const out = JSON.parse(result.stdout) as { checks: { name: string }[] };
      for (const check of out.checks) expect(check.name).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/);
    } finally {
      await rm(state, { recursive: true, force: true });
    }
  });

  it.skipIf(!hasPodman && !requireEngines)(
    '--log-format text into a pipe has no colour codes',
    async () => {
      const state = await mkdtemp(join(tmpdir(), 'cw-cli-'));
      const child = execa(
        'node',
        [
          BIN,
          'run',
          '--log-format',
          'text',
          '--state-dir',
          state,
          '--nsqd-tcp-addresses',
          `127.0.0.1:${await closedPort()}`,
          ...(ociRuntime ? ['--oci-runtime', ociRuntime] : []),
        ],
        { reject: false, env: { NODE_NO_WARNINGS: '1' }, timeout: 120_000 },
      );
      let text = '';
      child.stderr?.on('data', (chunk: Buffer) => {
        text += chunk.toString('utf8');
        if (text.includes('worker started')) child.kill('SIGKILL');
      });
      await child;
      // A killed worker leaves its temp folder and its lock beside it: nothing ran in them.
      const id = (await readFile(join(state, 'worker-id'), 'utf8')).trim();
      await rm(workerTmpDir(id), { recursive: true, force: true });
      await rm(workerLiveDir(id), { recursive: true, force: true });
      await rm(state, { recursive: true, force: true });
      expect(text).toContain('worker started');
      expect(text).not.toContain('\u001b[');
    },
  );
});
