import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { z } from 'zod';
import { compareVersions } from '../config/version.js';
import type { Gpu } from './discover.js';

/** Where podman looks for CDI specs (4.3 honours no other folder). */
export const CDI_DIRS = ['/etc/cdi', '/var/run/cdi'];

const editsSchema = z
  .object({
    deviceNodes: z
      .array(z.object({ path: z.string(), hostPath: z.string().optional() }).passthrough())
      .optional(),
    mounts: z
      .array(z.object({ hostPath: z.string(), containerPath: z.string() }).passthrough())
      .optional(),
    hooks: z.array(z.object({ hookName: z.string(), path: z.string() }).passthrough()).optional(),
    additionalGids: z.array(z.number()).optional(),
  })
  .passthrough();

export const CdiSpecSchema = z
  .object({
    cdiVersion: z.string(),
    kind: z.string(),
    devices: z.array(z.object({ name: z.string(), containerEdits: editsSchema }).passthrough()),
    containerEdits: editsSchema.optional(),
  })
  .passthrough();
export type CdiSpec = z.infer<typeof CdiSpecSchema>;
type Edits = z.infer<typeof editsSchema>;

export interface SpecFile {
  file: string;
  spec?: CdiSpec;
  /** Why the file could not be read or parsed. */
  error?: string;
}

/** Every spec file in the CDI folders, parsed; those of other kinds are left out. */
export async function findCdiSpecs(kind: string, dirs = CDI_DIRS): Promise<SpecFile[]> {
  const found: SpecFile[] = [];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => /\.(json|ya?ml)$/.test(n)).sort();
    } catch {
      continue;
    }
    for (const name of names) {
      const file = join(dir, name);
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (error) {
        // A file removed since the listing (a spec being regenerated) is not there.
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
        found.push({ file, error: `cannot be read: ${(error as Error).message}` });
        continue;
      }
      let raw: unknown;
      try {
        raw = parse(text);
      } catch (error) {
        // A file whose kind cannot be told may be the one asked for: report it.
        found.push({ file, error: `does not parse: ${(error as Error).message}` });
        continue;
      }
      if ((raw as { kind?: unknown } | null)?.kind !== kind) continue;
      const parsed = CdiSpecSchema.safeParse(raw);
      found.push(
        parsed.success
          ? { file, spec: parsed.data }
          : { file, error: `is not a CDI spec: ${parsed.error.issues[0]?.message}` },
      );
    }
  }
  return found;
}

/**
 * The newest cdiVersion a podman reads, from the container-device-interface release it
 * vendors: 4.3.1 refuses specs above 0.5.0 (seen), so `additionalGids` (0.7.0) breaks it.
 */
const PODMAN_CDI_READS: Array<{ podmanBelow: string; reads: string }> = [
  { podmanBelow: '4.1.0', reads: '0.0.0' },
  { podmanBelow: '4.7.0', reads: '0.5.0' },
  { podmanBelow: '5.0.0', reads: '0.6.0' },
];

/** undefined: no known limit (a newer podman). '0.0.0': no CDI at all. */
export function cdiVersionReadBy(podmanVersion: string): string | undefined {
  return PODMAN_CDI_READS.find((row) => compareVersions(podmanVersion, row.podmanBelow) < 0)?.reads;
}

export function allEdits(spec: CdiSpec): Edits[] {
  return [
    ...(spec.containerEdits ? [spec.containerEdits] : []),
    ...spec.devices.map((d) => d.containerEdits),
  ];
}

export function usesAdditionalGids(spec: CdiSpec): boolean {
  return allEdits(spec).some((e) => (e.additionalGids?.length ?? 0) > 0);
}

export function hookNames(spec: CdiSpec): string[] {
  return allEdits(spec).flatMap((e) => (e.hooks ?? []).map((h) => `${h.hookName} ${h.path}`));
}

/** The spec's device for a GPU: named by its UUID or by its index. */
export function deviceFor(spec: CdiSpec, gpu: Gpu) {
  return spec.devices.find((d) => d.name === gpu.uuid || d.name === String(gpu.index));
}

/** Host files the spec needs for these GPUs (and its common edits) that are not there. */
export async function missingHostFiles(spec: CdiSpec, gpus: readonly Gpu[]): Promise<string[]> {
  const edits: Edits[] = [
    ...(spec.containerEdits ? [spec.containerEdits] : []),
    ...gpus.flatMap((g) => {
      const device = deviceFor(spec, g);
      return device ? [device.containerEdits] : [];
    }),
  ];
  const paths = new Set<string>();
  for (const e of edits) {
    for (const node of e.deviceNodes ?? []) paths.add(node.hostPath ?? node.path);
    for (const mount of e.mounts ?? []) paths.add(mount.hostPath);
  }
  const missing: string[] = [];
  for (const path of paths) {
    try {
      await stat(path);
    } catch {
      missing.push(path);
    }
  }
  return missing;
}

/** The device node paths a container given this GPU sees, from the spec. */
export function containerNodesFor(spec: CdiSpec, gpu: Gpu): string[] {
  return (deviceFor(spec, gpu)?.containerEdits.deviceNodes ?? []).map((n) => n.path);
}
