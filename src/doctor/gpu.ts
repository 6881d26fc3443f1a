import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { versionBelow } from '../config/version.js';
import { LABEL_WORKER } from '../engine/labels.js';
import { probeContext } from '../engine/probe-context.js';
import type { Engine, RunLimits } from '../engine/types.js';
import { toWorkerError } from '../errors.js';
import {
  type CdiSpec,
  cdiVersionReadBy,
  containerNodesFor,
  deviceFor,
  findCdiSpecs,
  hookNames,
  missingHostFiles,
  usesAdditionalGids,
} from '../gpu/cdi.js';
import { discoverGpus, type Gpu } from '../gpu/discover.js';
import { checkCapacity, type GpuDemand, type GpuSelection, selectPool } from '../gpu/pool.js';
import { onPath, toolkitFloor, toolkitOpenCves, toolkitVersion } from '../gpu/toolkit.js';
import { type Check, fail, pass, skip, warn } from './check.js';

export interface GpuCheckOptions extends GpuDemand {
  selection: GpuSelection;
  cdiKind: string;
  limits: RunLimits;
  busyboxPath?: string;
  /** Where nvidia-smi, nvidia-ctk and the docker hook are looked up (default: PATH). */
  toolDir?: string;
}

const REGENERATE = 'nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml';

/** The GPU chain, link by link: driver, pool, spec, toolkit, and a hardened smoke run. */
export async function checkGpus(engine: Engine | undefined, o: GpuCheckOptions): Promise<Check[]> {
  const asked = o.learnGpus + o.predictGpus > 0;
  let found: Gpu[];
  try {
    found = await discoverGpus(tool(o, 'nvidia-smi'));
  } catch (error) {
    if (!asked) return [skip('gpu', 'no GPU asked for (--learn-gpus and --predict-gpus are 0)')];
    return [fail('gpu-driver', 'nvidia-smi does not answer', error)];
  }
  const listed = found.map(describeGpu).join('; ') || 'none';
  if (!asked) {
    return [pass('gpu-driver', `nvidia-smi lists ${listed}`), skip('gpu', 'no GPU asked for')];
  }
  let pool: Gpu[];
  try {
    pool = selectPool(found, o.selection);
    checkCapacity(pool, o);
  } catch (error) {
    return [pass('gpu-driver', `nvidia-smi lists ${listed}`), fail('gpu-pool', 'GPU pool', error)];
  }
  const checks = [
    pass('gpu-driver', `nvidia-smi lists ${listed}`),
    pass('gpu-pool', `this worker hands out ${pool.map((g) => g.index).join(', ')}`),
  ];
  if (!engine) return [...checks, skip('gpu-engine', 'no engine to give GPUs to')];
  const cdi = engine.info.name === 'podman' || engine.info.gpuDevices === 'cdi';
  let spec: CdiSpec | undefined;
  if (cdi) {
    const found = await checkSpec(engine, o.cdiKind, pool);
    checks.push(...found.checks);
    spec = found.spec;
  } else {
    checks.push(await checkDockerHook(o));
  }
  checks.push(await checkToolkit(o));
  if (cdi && !spec) return [...checks, skip('gpu-smoke', 'no usable CDI spec to run with')];
  checks.push(...(await smokeRun(engine, o, pool[0] as Gpu, spec)));
  return checks;
}

function describeGpu(g: Gpu): string {
  return `${g.index} ${g.name} ${g.uuid} (driver ${g.driverVersion}, ${g.memoryMiB} MiB)`;
}

async function checkSpec(
  engine: Engine,
  kind: string,
  pool: Gpu[],
): Promise<{ checks: Check[]; spec?: CdiSpec }> {
  const info = engine.info;
  const reads = info.name === 'podman' ? cdiVersionReadBy(info.version) : undefined;
  if (reads === '0.0.0') {
    return {
      checks: [
        fail(
          'gpu-cdi',
          `podman ${info.version} has no CDI devices`,
          undefined,
          'podman 4.1 or newer',
        ),
      ],
    };
  }
  const files = await findCdiSpecs(kind);
  const specs = files.filter((f) => f.spec);
  // A file that cannot be read or parsed may be of this kind: podman cannot use it either.
  const broken = files.filter((f) => f.error);
  const brokenCheck = (status: 'warn' | 'fail', lead: string) => {
    const first = broken[0] as { file: string; error?: string };
    const unreadable = first.error?.startsWith('cannot be read');
    const hint = unreadable
      ? 'make it readable by the user the worker runs as (rootless podman reads it as that user)'
      : `fix or regenerate it: ${REGENERATE}`;
    const message = `${lead}CDI spec ${first.file} ${first.error}${broken.length > 1 ? ` (and ${broken.length - 1} more)` : ''}`;
    return status === 'fail'
      ? fail('gpu-cdi', message, undefined, hint)
      : warn('gpu-cdi-files', message, hint);
  };
  if (specs.length === 0 && broken.length) {
    return { checks: [brokenCheck('fail', `no usable spec of kind ${kind}: `)] };
  }
  if (specs.length === 0) {
    return {
      checks: [
        fail(
          'gpu-cdi',
          `no CDI spec of kind ${kind} in /etc/cdi or /var/run/cdi`,
          undefined,
          `write one: ${REGENERATE} (add --disable-hook all for a hook-less spec), or pass --gpu-cdi-kind`,
        ),
      ],
    };
  }
  if (specs.length > 1) {
    return {
      checks: [
        fail(
          'gpu-cdi',
          `${specs.length} CDI specs of kind ${kind}: ${specs.map((s) => s.file).join(', ')}`,
          undefined,
          'keep one: two specs that name the same device conflict (a /var/run/cdi one is rewritten at boot)',
        ),
      ],
    };
  }
  const { file, spec } = specs[0] as { file: string; spec: CdiSpec };
  const problem = await specProblem(spec, pool, reads, info.version);
  const checks: Check[] = broken.length ? [brokenCheck('warn', '')] : [];
  checks.push(
    ...(problem
      ? [fail('gpu-cdi', `CDI spec ${file}: ${problem.message}`, undefined, problem.hint)]
      : [pass('gpu-cdi', `CDI spec ${file} (cdiVersion ${spec.cdiVersion}) names every pool GPU`)]),
  );
  const hooks = hookNames(spec);
  checks.push(
    hooks.length
      ? warn(
          'gpu-cdi-hooks',
          `the spec runs hooks on the host at every container creation: ${hooks.join('; ')}`,
          'hooks are where the toolkit escapes were, and they write into read-only roots: prefer a hook-less spec (nvidia-ctk cdi generate --disable-hook all)',
        )
      : pass('gpu-cdi-hooks', 'the spec runs no hook on the host'),
  );
  return { checks, spec: problem ? undefined : spec };
}

async function specProblem(
  spec: CdiSpec,
  pool: Gpu[],
  reads: string | undefined,
  podmanVersion: string,
): Promise<{ message: string; hint: string } | undefined> {
  if (reads && usesAdditionalGids(spec) && versionBelow(reads, '0.7.0')) {
    return {
      message: `it uses additionalGids (cdiVersion 0.7.0), which podman ${podmanVersion} cannot read`,
      hint: `regenerate it with --feature-flag no-additional-gids-for-device-nodes: ${REGENERATE} --feature-flag no-additional-gids-for-device-nodes`,
    };
  }
  if (reads && versionBelow(reads, spec.cdiVersion)) {
    return {
      message: `cdiVersion ${spec.cdiVersion} is newer than podman ${podmanVersion} reads (${reads})`,
      hint: `regenerate it for this podman, or write a ${reads} spec by hand`,
    };
  }
  const unnamed = pool.filter((g) => !deviceFor(spec, g));
  if (unnamed.length) {
    return {
      message: `it names no device for GPU ${unnamed.map((g) => `${g.index} (${g.uuid})`).join(', ')}`,
      hint: `regenerate it after adding GPUs: ${REGENERATE}`,
    };
  }
  const missing = await missingHostFiles(spec, pool);
  if (missing.length) {
    return {
      message: `it names host files that do not exist (stale after a driver upgrade?): ${missing.slice(0, 5).join(', ')}`,
      hint: `regenerate it: ${REGENERATE}`,
    };
  }
  return undefined;
}

function tool(o: GpuCheckOptions, name: string): string {
  return o.toolDir ? join(o.toolDir, name) : name;
}

async function checkDockerHook(o: GpuCheckOptions): Promise<Check> {
  return (await onPath('nvidia-container-runtime-hook', o.toolDir))
    ? pass('gpu-docker-hook', 'nvidia-container-runtime-hook is on PATH for docker --gpus')
    : fail(
        'gpu-docker-hook',
        'docker gives GPUs with --gpus, which needs nvidia-container-runtime-hook, and it is not on PATH',
        undefined,
        'install the NVIDIA Container Toolkit, or use podman with a CDI spec',
      );
}

async function checkToolkit(o: GpuCheckOptions): Promise<Check> {
  const version = await toolkitVersion(tool(o, 'nvidia-ctk'));
  if (!version)
    return skip('gpu-toolkit', 'nvidia-ctk is not installed (a hook-less spec needs none)');
  const open = toolkitOpenCves(version);
  return open.length
    ? fail(
        'gpu-toolkit',
        `NVIDIA Container Toolkit ${version} has known container escapes (${open.join(', ')})`,
        undefined,
        `upgrade to ${toolkitFloor()} or newer`,
      )
    : pass('gpu-toolkit', `NVIDIA Container Toolkit ${version}`);
}

/** One GPU given: exactly its device inside (and its UUID where nvidia-smi is mounted); none given: no device. */
async function smokeRun(
  engine: Engine,
  o: GpuCheckOptions,
  gpu: Gpu,
  spec: CdiSpec | undefined,
): Promise<Check[]> {
  const labels = { [LABEL_WORKER]: `probe-${randomBytes(4).toString('hex')}` };
  try {
    const image = await probeImage(engine, o.busyboxPath ?? '/bin/busybox', labels);
    const withGpu = await listDevices(engine, image, o, labels, [gpu.uuid]);
    const without = await listDevices(engine, image, o, labels, []);
    const expected = spec ? containerNodesFor(spec, gpu).filter(isGpuNode).sort() : undefined;
    const seen = withGpu.nodes.filter(isGpuNode).sort();
    const checks: Check[] = [];
    const rightNodes = expected ? same(seen, expected) : seen.length === 1;
    const rightUuid = withGpu.smi.length === 0 || same(withGpu.smi, [gpu.uuid]);
    checks.push(
      rightNodes && rightUuid
        ? pass(
            'gpu-smoke',
            `a hardened container given GPU ${gpu.index} sees ${seen.join(', ')}${withGpu.smi.length ? ` and nvidia-smi lists ${gpu.uuid}` : ''}`,
          )
        : fail(
            'gpu-smoke',
            `a hardened container given GPU ${gpu.index} (${gpu.uuid}) sees ${seen.join(', ') || 'no GPU device'}${withGpu.smi.length ? `, nvidia-smi lists ${withGpu.smi.join(', ')}` : ''}${expected ? `; expected ${expected.join(', ')}` : ''}`,
            undefined,
            `check the CDI spec's devices, or regenerate it: ${REGENERATE}`,
          ),
    );
    checks.push(
      without.nodes.length === 0
        ? pass('gpu-none', 'a container given no GPU sees no /dev/nvidia*')
        : fail('gpu-none', `a container given no GPU sees ${without.nodes.join(', ')}`),
    );
    return checks;
  } catch (error) {
    const e = toWorkerError(error);
    return [fail('gpu-smoke', 'cannot run a hardened container with a GPU', e)];
  } finally {
    await engine.removeByLabels(labels).catch(() => undefined);
  }
}

const isGpuNode = (path: string) => /^\/dev\/nvidia\d+$/.test(path);
const same = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

const LIST_SCRIPT = [
  'for f in /dev/nvidia*; do [ -e "$f" ] && echo "dev=$f"; done',
  'if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L | sed -n "s/.*(UUID: \\(.*\\))/smi=\\1/p"; fi',
  'true',
].join('; ');

async function listDevices(
  engine: Engine,
  image: string,
  o: GpuCheckOptions,
  labels: Record<string, string>,
  uuids: string[],
): Promise<{ nodes: string[]; smi: string[] }> {
  const result = await engine.run({
    image,
    command: ['sh', '-c', LIST_SCRIPT],
    mounts: [],
    labels,
    limits: o.limits,
    timeoutMs: 60_000,
    logTailLines: 200,
    logTailBytes: 32 * 1024,
    ...(uuids.length ? { gpus: { kind: o.cdiKind, uuids } } : {}),
  });
  if (result.exitCode !== 0) {
    throw new Error(`the probe container exited with ${result.exitCode}: ${result.logTail}`);
  }
  const lines = result.logTail.split('\n');
  const pick = (prefix: string) =>
    lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length).trim());
  return { nodes: pick('dev='), smi: pick('smi=') };
}

async function probeImage(engine: Engine, busyboxPath: string, labels: Record<string, string>) {
  const context = await probeContext(await readFile(busyboxPath));
  const built = await engine.buildImage({
    role: 'probe',
    context: Readable.from([context]),
    labels,
  });
  return built.image;
}
