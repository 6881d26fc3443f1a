import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { runFlags, taskFlags } from '../../src/cli/flags.js';
import { parseDuration } from '../../src/config/duration.js';

// The shipped unit template and its example environment files, as systemd reads them.

const root = join(import.meta.dirname, '..', '..');
const dir = join(root, 'contrib', 'systemd');

/** [Section] -> key -> every value given (systemd keys may repeat). */
function parseUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = new Map();
      sections.set(section[1] as string, current);
      continue;
    }
    const eq = line.indexOf('=');
    if (!current || eq < 0) throw new Error(`not a unit line: ${line}`);
    const key = line.slice(0, eq).trim();
    current.set(key, [...(current.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return sections;
}

function parseEnv(text: string): Map<string, string> {
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line.trim() === '' || line.trim().startsWith('#')) continue;
    const eq = line.indexOf('=');
    vars.set(line.slice(0, eq), line.slice(eq + 1));
  }
  return vars;
}

const unitText = await readFile(join(dir, 'compute-worker@.service'), 'utf8');
const unit = parseUnit(unitText);
const hasAnalyze = await execa('systemd-analyze', ['--version'], { reject: false }).then(
  (r) => r.exitCode === 0,
  () => false,
);
const service = (key: string) => unit.get('Service')?.get(key) ?? [];

describe('contrib/systemd/compute-worker@.service', () => {
  it('drains on stop: SIGTERM to the worker alone, for longer than its shutdown grace', async () => {
    expect(service('KillMode')).toEqual(['mixed']);
    expect(service('KillSignal')).toEqual(['SIGTERM']);
    expect(service('Restart')).toEqual(['on-failure']);
    expect(service('ExecStart')[0]).toMatch(/compute-worker run --state-dir \S+%i$/);
    const common = parseEnv(await readFile(join(dir, 'common.env.example'), 'utf8'));
    const grace = parseDuration(common.get('COMPUTE_WORKER_SHUTDOWN_GRACE') ?? '30s');
    const stop = parseDuration(service('TimeoutStopSec')[0] ?? '0');
    // Time to cancel the running tasks and remove their containers after the grace.
    expect(stop).toBeGreaterThanOrEqual(grace + 30_000);
    expect(service('EnvironmentFile')).toEqual([
      '/etc/compute-worker/common.env',
      '-/etc/compute-worker/%i.env',
    ]);
  });

  it('its example environment files name only flags the worker has', async () => {
    const known = new Set(
      Object.values({ ...runFlags, ...taskFlags }).map((f) => (f as { env?: string }).env),
    );
    for (const file of ['common.env.example', 'gpu0.env.example']) {
      const vars = parseEnv(await readFile(join(dir, file), 'utf8'));
      expect(vars.size).toBeGreaterThan(0);
      for (const name of vars.keys()) expect(known.has(name), `${file}: ${name}`).toBe(true);
    }
  });

  it.skipIf(!hasAnalyze)('passes systemd-analyze verify', async () => {
    const tmp = await mkdtemp(join(tmpdir(), 'cw-unit-'));
    try {
      // An instance of the template, starting the worker of this checkout.
      const file = join(tmp, 'compute-worker@test.service');
      await writeFile(
        file,
        unitText.replace('/usr/local/bin/compute-worker', join(root, 'bin', 'run.js')),
      );
      const result = await execa('systemd-analyze', ['verify', file], { reject: false });
      expect(`${result.stdout}${result.stderr}`).toBe('');
      expect(result.exitCode).toBe(0);
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
