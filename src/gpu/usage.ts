import { execa } from 'execa';

/** What one GPU did during a container step; a figure nvidia-smi never gave is left out. */
export interface GpuUsageSample {
  uuid: string;
  /** Seconds busy: each sample's utilization times the time since the one before. */
  busySeconds?: number;
  peakMemoryBytes?: number;
}

export const GPU_USAGE_ARGS = [
  '--query-gpu=uuid,utilization.gpu,memory.used',
  '--format=csv,noheader,nounits',
];
const SAMPLE_MS = 1000;
const TIMEOUT_MS = 10_000;
const MIB = 1024 * 1024;

export interface GpuWatch {
  /** Takes a last sample and returns what each of the watched GPUs did. */
  stop(): Promise<GpuUsageSample[]>;
}

/**
 * Samples the given GPUs with the host's nvidia-smi every second while a step runs. Every
 * GPU is asked for and only these are kept: a task's figures are of its own GPUs only.
 */
export function watchGpus(uuids: readonly string[], nvidiaSmi = 'nvidia-smi'): GpuWatch {
  const seen = new Map<string, { busy?: number; peak?: number }>(uuids.map((u) => [u, {}]));
  let previous = performance.now();
  let sampling: Promise<void> = Promise.resolve();
  const sample = () => {
    sampling = sampling.then(async () => {
      const lines = await querySmi(nvidiaSmi);
      const now = performance.now();
      const seconds = (now - previous) / 1000;
      previous = now;
      for (const { uuid, utilization, memoryMiB } of lines) {
        const entry = seen.get(uuid);
        if (!entry) continue;
        if (utilization !== undefined)
          entry.busy = (entry.busy ?? 0) + (utilization / 100) * seconds;
        if (memoryMiB !== undefined) entry.peak = Math.max(entry.peak ?? 0, memoryMiB * MIB);
      }
    });
    return sampling;
  };
  void sample();
  const timer = setInterval(() => void sample(), SAMPLE_MS);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await sample();
      return [...seen].map(([uuid, s]) => ({
        uuid,
        ...(s.busy !== undefined ? { busySeconds: s.busy } : {}),
        ...(s.peak !== undefined ? { peakMemoryBytes: s.peak } : {}),
      }));
    },
  };
}

interface SmiLine {
  uuid: string;
  utilization?: number;
  memoryMiB?: number;
}

/** One nvidia-smi call; a failing or missing one gives no sample, never an error. */
async function querySmi(nvidiaSmi: string): Promise<SmiLine[]> {
  const result = await execa(nvidiaSmi, GPU_USAGE_ARGS, {
    reject: false,
    timeout: TIMEOUT_MS,
    stdin: 'ignore',
    maxBuffer: 1024 * 1024,
  });
  return result.failed ? [] : parseGpuUsage(String(result.stdout));
}

/** `GPU-5e84..., 35, 8123` per line; `[N/A]` (a field this GPU does not report) is left out. */
export function parseGpuUsage(csv: string): SmiLine[] {
  const lines: SmiLine[] = [];
  for (const raw of csv.split('\n')) {
    const [uuid, utilization, memory] = raw.split(',').map((f) => f.trim());
    if (!uuid || !/^(GPU|MIG)-/.test(uuid)) continue;
    const number = (text: string | undefined) =>
      text !== undefined && /^\d+(\.\d+)?$/.test(text) ? Number(text) : undefined;
    const u = number(utilization);
    const m = number(memory);
    lines.push({
      uuid,
      ...(u !== undefined ? { utilization: u } : {}),
      ...(m !== undefined ? { memoryMiB: m } : {}),
    });
  }
  return lines;
}
