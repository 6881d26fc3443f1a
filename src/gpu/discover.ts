import { execa } from 'execa';
import { WorkerError } from '../errors.js';

/** One GPU of the host, as nvidia-smi names it. The pool is kept by UUID: indices can change. */
export interface Gpu {
  index: number;
  uuid: string;
  name: string;
  driverVersion: string;
  memoryMiB: number;
}

export const NVIDIA_SMI_ARGS = [
  '--query-gpu=index,uuid,name,driver_version,memory.total',
  '--format=csv,noheader',
];

const UUID = /^(GPU|MIG)-[0-9a-zA-Z-]+$/;
const TIMEOUT_MS = 30_000;

/** `0, GPU-5e84..., NVIDIA H200, 580.159.04, 143771 MiB` per line. */
export function parseGpuList(csv: string): Gpu[] {
  const gpus: Gpu[] = [];
  for (const [n, raw] of csv.split('\n').entries()) {
    const line = raw.trim();
    // What nvidia-smi prints on a host whose driver sees no GPU.
    if (!line || /^No devices were found/i.test(line)) continue;
    const fields = line.split(',').map((f) => f.trim());
    const [index, uuid, name, driverVersion, memory] = fields;
    if (fields.length !== 5 || !/^\d+$/.test(index ?? '') || !UUID.test(uuid ?? '')) {
      throw new WorkerError(
        'CONFIG_INVALID',
        `nvidia-smi printed a line the worker cannot read (line ${n + 1}): ${line.slice(0, 200)}`,
      );
    }
    gpus.push({
      index: Number(index),
      uuid: uuid as string,
      name: name as string,
      driverVersion: driverVersion as string,
      memoryMiB: Number.parseInt(memory as string, 10) || 0,
    });
  }
  return gpus;
}

/** Asks nvidia-smi for the host's GPUs, once per process. A missing or failing nvidia-smi is an error. */
export async function discoverGpus(nvidiaSmi = 'nvidia-smi'): Promise<Gpu[]> {
  const result = await execa(nvidiaSmi, NVIDIA_SMI_ARGS, {
    reject: false,
    timeout: TIMEOUT_MS,
    stdin: 'ignore',
    maxBuffer: 1024 * 1024,
  });
  if (result.failed) {
    const missing = (result.cause as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
    throw new WorkerError(
      'CONFIG_INVALID',
      missing
        ? `GPUs were asked for, but ${nvidiaSmi} is not on PATH`
        : `GPUs were asked for, but ${nvidiaSmi} failed${result.timedOut ? ' (timed out)' : ` with exit code ${result.exitCode}`}`,
      {
        detail: String(result.stderr || result.stdout || '').slice(-2000) || undefined,
        hint: missing
          ? 'install the NVIDIA driver (nvidia-smi comes with it), or run with --learn-gpus 0 --predict-gpus 0'
          : 'check the NVIDIA driver with nvidia-smi; a driver upgrade needs a reboot',
      },
    );
  }
  return parseGpuList(String(result.stdout));
}
