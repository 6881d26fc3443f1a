import { randomBytes, randomUUID } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { execa } from 'execa';

/**
 * GPUs for a machine without one: character devices made with mknod (the numbers of
 * /dev/null), a CDI spec in /etc/cdi of a kind unique to the test (podman 4.3 reads no
 * other folder, and two specs naming the same device conflict), and a stand-in nvidia-smi
 * on PATH that lists them. Needs root.
 */
export interface FakeGpus {
  kind: string;
  uuids: string[];
  /** Folder of the stand-in nvidia-smi (and nvidia-ctk, when asked for). */
  binDir: string;
  /** PATH with the stand-ins first. */
  path: string;
  specFile: string;
  /** The container path of GPU i's node. */
  node(index: number): string;
  /** Rewrites the spec (a stale or broken one). */
  writeSpec(spec: unknown, ext?: 'json' | 'yaml'): Promise<void>;
  /** A stand-in nvidia-ctk printing this version. */
  toolkit(version: string): Promise<void>;
  remove(): Promise<void>;
}

export interface FakeGpuOptions {
  count: number;
  /** Spec edits beyond the device nodes, e.g. hooks. */
  commonEdits?: Record<string, unknown>;
  cdiVersion?: string;
}

export const FAKE_GPU_BUSY_PERCENT = 50;
export const FAKE_GPU_USED_MIB = 1024;

export async function makeFakeGpus(options: FakeGpuOptions): Promise<FakeGpus> {
  const id = randomBytes(4).toString('hex');
  const dir = await mkdtemp(join(tmpdir(), 'cw-fake-gpus-'));
  const binDir = join(dir, 'bin');
  await mkdir(binDir);
  const kind = `cw-test-${id}.example/gpu`;
  const uuids = Array.from({ length: options.count }, () => `GPU-${randomUUID()}`);
  const devices = [];
  for (let i = 0; i < options.count; i++) {
    const hostPath = join(dir, `g${i}`);
    await execa('mknod', ['-m', '0666', hostPath, 'c', '1', '3']);
    const edits = { deviceNodes: [{ path: `/dev/nvidia${i}`, hostPath }] };
    devices.push({ name: String(i), containerEdits: edits });
    devices.push({ name: uuids[i], containerEdits: edits });
  }
  const spec = {
    cdiVersion: options.cdiVersion ?? '0.5.0',
    kind,
    devices,
    ...(options.commonEdits ? { containerEdits: options.commonEdits } : {}),
  };
  let specFile = join('/etc/cdi', `cw-test-${id}.json`);
  await mkdir('/etc/cdi', { recursive: true });
  await writeFile(specFile, JSON.stringify(spec));
  const smi = uuids.map((u, i) => `${i}, ${u}, Fake GPU ${i}, 580.159.04, 81559 MiB`).join('\n');
  // The usage query (uuid, utilization %, MiB used): every GPU half busy, 1024 MiB used.
  const busy = uuids.map((u) => `${u}, ${FAKE_GPU_BUSY_PERCENT}, ${FAKE_GPU_USED_MIB}`).join('\n');
  await script(
    join(binDir, 'nvidia-smi'),
    `case "$*" in *utilization.gpu*) cat <<'EOF'\n${busy}\nEOF\nexit 0 ;; esac\ncat <<'EOF'\n${smi}\nEOF`,
  );
  return {
    kind,
    uuids,
    binDir,
    path: `${binDir}${delimiter}${process.env.PATH ?? ''}`,
    get specFile() {
      return specFile;
    },
    node: (index) => `/dev/nvidia${index}`,
    async writeSpec(next, ext = 'json') {
      await rm(specFile, { force: true });
      specFile = join('/etc/cdi', `cw-test-${id}.${ext}`);
      await writeFile(specFile, typeof next === 'string' ? next : JSON.stringify(next));
    },
    async toolkit(version) {
      await script(
        join(binDir, 'nvidia-ctk'),
        `echo "NVIDIA Container Toolkit CLI version ${version}"\necho "commit: 0000000"`,
      );
    },
    async remove() {
      await rm(specFile, { force: true });
      await rm(dir, { recursive: true, force: true });
    },
  };
}

async function script(path: string, body: string): Promise<void> {
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
}

/** Runs fn with PATH set to the fake GPUs' stand-ins, for code that looks them up itself. */
export async function withPath<T>(path: string, fn: () => Promise<T>): Promise<T> {
  const before = process.env.PATH;
  process.env.PATH = path;
  try {
    return await fn();
  } finally {
    process.env.PATH = before;
  }
}

export const isRoot = () => process.getuid?.() === 0;
