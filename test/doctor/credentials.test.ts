import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type OrchestratorServer,
  startOrchestratorServer,
} from '../support/orchestrator-server.js';
import { type StorageServer, startStorageServer } from '../support/storage-server.js';

const cli = join(import.meta.dirname, '..', '..', 'bin', 'run.js');

interface DoctorJson {
  ready: boolean;
  checks: { name: string; status: string; message: string; hint?: string }[];
}

// Without an engine doctor proves no container: these runs check the services alone.
describe('doctor: the services take the worker credentials and need them', () => {
  let dir: string;
  let storage: StorageServer;
  let orchestrator: OrchestratorServer;
  let careless: Server;
  let carelessPort: number;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-doctor-credentials-'));
    storage = await startStorageServer({ user: 'worker', password: 'right' });
    orchestrator = await startOrchestratorServer({ user: 'worker', password: 'right' });
    // Answers everyone, like a service deployed without authentication.
    careless = createServer((req, res) => {
      req.resume();
      res.writeHead(req.url === '/health' ? 200 : 404, { 'content-type': 'application/json' });
      res.end('{"error":"not found"}');
    });
    await new Promise<void>((resolve) => careless.listen(0, '127.0.0.1', resolve));
    carelessPort = (careless.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await storage.close();
    await orchestrator.close();
    await new Promise((resolve) => careless.close(resolve));
    await rm(dir, { recursive: true, force: true });
  });

  const doctor = async (storagePassword: string, orchestratorPassword: string, port?: number) => {
    const result = await execa(
      'node',
      [
        cli,
        'doctor',
        '--json',
        '--state-dir',
        dir,
        '--engine-path',
        '/nonexistent/podman',
        '--storage-host',
        '127.0.0.1',
        '--storage-port',
        String(port ?? storage.port),
        '--storage-user',
        'worker',
        '--storage-password',
        storagePassword,
        '--orchestrator-host',
        '127.0.0.1',
        '--orchestrator-port',
        String(port ?? orchestrator.port),
        '--orchestrator-user',
        'worker',
        '--orchestrator-password',
        orchestratorPassword,
      ],
      { reject: false },
    );
    const out = JSON.parse(result.stdout) as DoctorJson;
    const check = (name: string) => out.checks.find((c) => c.name === name);
    return { result, out, check };
  };

  it('passes when both services accept the credentials and refuse a stranger', async () => {
    const { check } = await doctor('right', 'right');
    expect(check('storage')?.status).toBe('pass');
    expect(check('storage-credentials')).toMatchObject({ status: 'pass' });
    expect(check('orchestrator-credentials')).toMatchObject({ status: 'pass' });
  });

  it("fails when storage refuses the worker's password, though its /health answers anyone", async () => {
    const { result, out, check } = await doctor('wrong', 'right');
    expect(check('storage')?.status).toBe('pass');
    expect(check('storage-credentials')?.status).toBe('fail');
    expect(check('storage-credentials')?.message).toContain("refuses the worker's credentials");
    expect(check('storage-credentials')?.hint).toContain('--storage-password');
    expect(check('orchestrator-credentials')?.status).toBe('pass');
    expect(out.ready).toBe(false);
    expect(result.exitCode).toBe(1);
    expect(result.stdout + result.stderr).not.toContain('wrong');
  });

  it("fails when the orchestrator refuses the worker's password", async () => {
    const { out, check } = await doctor('right', 'wrong');
    expect(check('orchestrator-credentials')?.status).toBe('fail');
    expect(check('orchestrator-credentials')?.hint).toContain('--orchestrator-password');
    expect(out.ready).toBe(false);
  });

  it('warns when a service answers without any credentials', async () => {
    const { check } = await doctor('right', 'right', carelessPort);
    expect(check('storage-credentials')?.status).toBe('warn');
    expect(check('storage-credentials')?.message).toContain('does not check credentials');
    expect(check('orchestrator-credentials')?.status).toBe('warn');
  });
});
