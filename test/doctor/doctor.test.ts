import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findBuildUser } from '../../src/build/user.js';
import { identifyNsqd } from '../../src/doctor/nsq.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';
import { type Nsqd, type Nsqlookupd, startNsqd, startNsqlookupd } from '../support/nsq/index.js';

const cli = join(import.meta.dirname, '..', '..', 'bin', 'run.js');
const podman = VARIANTS['podman-rootful'];
const why = unavailableUnlessRequired(podman);

interface DoctorJson {
  ready: boolean;
  summary: string;
  checks: { name: string; status: string; message: string; hint?: string }[];
}

describe('identifyNsqd', () => {
  let nsqd: Nsqd;
  beforeAll(async () => {
    nsqd = await startNsqd({ msgTimeoutMs: 5000, maxMsgTimeoutMs: 6000 });
  });
  afterAll(() => nsqd.stop());

  it("reads nsqd's message timeouts from its IDENTIFY answer", async () => {
    const id = await identifyNsqd(nsqd.tcpAddress);
    expect(id).toMatchObject({ msg_timeout: 5000, max_msg_timeout: 6000, version: '1.3.0' });
  });

  it('names the address when nothing listens there', async () => {
    await expect(identifyNsqd('127.0.0.1:1')).rejects.toThrow(/ECONNREFUSED/);
  });
});

// Several doctor runs at once, each building and running containers: slow on 2 cores.
describe.skipIf(why).concurrent('compute-worker doctor', { timeout: 300_000 }, () => {
  let dir: string;
  let nsqd: Nsqd;
  let lookupd: Nsqlookupd;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-doctor-'));
    await mkdir(join(dir, 'storage'));
    nsqd = await startNsqd({ maxMsgTimeoutMs: 6000 });
    nsqd.publish('train', '{}');
    lookupd = await startNsqlookupd();
    lookupd.register(nsqd);
  });
  afterAll(async () => {
    await nsqd.stop();
    await lookupd.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const doctor = (...args: string[]) =>
    execa('node', [cli, 'doctor', '--json', '--state-dir', dir, '--oci-runtime', 'runc', ...args], {
      reject: false,
    });

  it('says the host is ready after proving the probe container is isolated', async () => {
    const result = await doctor('--disk-limit', '1m');
    const out = JSON.parse(result.stdout) as DoctorJson;
    expect(out.summary, result.stdout).toMatch(/^ready/);
    expect(result.exitCode).toBe(0);
    const status = Object.fromEntries(out.checks.map((c) => [c.name, c.status]));
    expect(status).toMatchObject({
      engine: 'pass',
      build: 'pass',
      run: 'pass',
      network: 'pass',
      capabilities: 'pass',
      'no-new-privileges': 'pass',
      seccomp: 'pass',
      'read-only-root': 'pass',
      user: 'pass',
      tmp: 'pass',
      'memory-limit': 'pass',
      'pids-limit': 'pass',
      'read-only-inputs': 'pass',
      storage: 'pass',
      orchestrator: 'pass',
      'disk-engine-storage': 'pass',
      'disk-temp-folder': 'pass',
      'image-cache': 'pass',
      // Off by default (--data-cache-size 0).
      'data-cache': 'skip',
    });
    // Names a script can match on: lower case words joined by dashes.
    for (const check of out.checks) expect(check.name).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/);
    // As root with rootful podman, each writing step of a task gets a sized filesystem.
    if (process.getuid?.() === 0) expect(status['disk-bound']).toBe('pass');
    // A fresh state folder: this worker has built nothing yet.
    expect(out.checks.find((c) => c.name === 'image-cache')?.message).toBe('0 images, 0 B of 50g');
    const builder = out.checks.find((c) => c.name === 'builder');
    expect(builder?.message).toMatch(/^podman \S+ builds with buildah \d+\.\d+\.\d+/);
    // The build user (scripts/setup-test-engines.sh) is the default: a RUN step is its root.
    if (await findBuildUser('auto')) expect(status['build-namespace']).toBe('pass');
  });

  it('on a fresh host with the defaults, creates the empty local storage and ledger and is ready', async () => {
    const fresh = join(dir, 'fresh-state');
    const result = await execa(
      'node',
      [
        cli,
        'doctor',
        '--json',
        '--state-dir',
        fresh,
        '--oci-runtime',
        'runc',
        '--disk-limit',
        '1m',
      ],
      { reject: false },
    );
    const out = JSON.parse(result.stdout) as DoctorJson;
    expect(out.checks.filter((c) => c.status === 'fail')).toEqual([]);
    expect(result.exitCode).toBe(0);
    expect(await readdir(join(fresh, 'storage'))).toEqual([]);
    expect(await readFile(join(fresh, 'orchestrator.jsonl'), 'utf8')).toBe('');
  });

  // The NSQ and service checks need no engine: without one, doctor proves no container
  // and these runs take a second, not a minute on a busy machine.
  const noEngine = ['--engine-path', '/nonexistent/podman'];

  it("warns, naming nsqd's flag, when nsqd cannot keep a task in flight as long as it may run", async () => {
    const result = await doctor(
      ...noEngine,
      '--nsqlookupd-urls',
      lookupd.address,
      '--learn-timeout',
      '20m',
    );
    const out = JSON.parse(result.stdout) as DoctorJson;
    const capped = out.checks.find((c) => c.name === 'nsqd-max-msg-timeout');
    expect(capped?.status).toBe('warn');
    expect(capped?.message).toContain('at most 6s');
    expect(capped?.hint).toContain('--max-msg-timeout above 20m0s');
    expect(out.checks.find((c) => c.name === 'nsqd')?.message).toContain(nsqd.tcpAddress);
  });

  it('fails with a non-zero exit code and a hint when there is no engine', async () => {
    const result = await doctor('--engine-path', '/nonexistent/podman');
    const out = JSON.parse(result.stdout) as DoctorJson;
    expect(result.exitCode).toBe(1);
    expect(out.ready).toBe(false);
    const engine = out.checks.find((c) => c.name === 'engine');
    expect(engine).toMatchObject({ status: 'fail' });
    expect(engine?.message).toContain('/nonexistent/podman is not an executable file');
    expect(engine?.hint).toContain('--engine-path');
  });

  it('warns when the free space is under --min-free-disk', async () => {
    const result = await doctor('--disk-limit', '1m', '--min-free-disk', '100000g');
    const out = JSON.parse(result.stdout) as DoctorJson;
    const disk = out.checks.filter((c) => /^disk-(engine-storage|temp-folder)$/.test(c.name));
    expect(disk.map((c) => [c.name, c.status])).toEqual([
      ['disk-engine-storage', 'warn'],
      ['disk-temp-folder', 'warn'],
    ]);
    expect(disk[0]?.message).toMatch(
      /^\/var\/lib\/containers\/storage has .* free, less than --min-free-disk 100000g: the daemon takes no task until there is room$/,
    );
    expect(disk[1]?.hint).toContain('--min-free-disk');
  });

  it('fails when a task may not fit in the free space', async () => {
    const result = await doctor('--disk-limit', '100000g');
    const out = JSON.parse(result.stdout) as DoctorJson;
    expect(result.exitCode).toBe(1);
    const storage = out.checks.find((c) => c.name === 'disk-engine-storage');
    expect(storage?.status).toBe('fail');
    expect(storage?.message).toMatch(/free, less than --disk-limit 100000g: one task may not fit$/);
    expect(storage?.hint).toContain('--disk-limit');
  });

  it('fails when storage does not answer', async () => {
    const result = await doctor(...noEngine, '--storage-host', '127.0.0.1', '--storage-port', '1');
    const out = JSON.parse(result.stdout) as DoctorJson;
    expect(result.exitCode).toBe(1);
    const storage = out.checks.find((c) => c.name === 'storage');
    expect(storage?.status).toBe('fail');
    expect(storage?.message).toContain('127.0.0.1:1');
  });
});
