import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';

/** One task in progress, as written to disk so that a crash leaves a trace of it. */
export const JournalEntrySchema = z.object({
  taskUuid: z.string(),
  kind: z.enum(['learn', 'predict']),
  messageId: z.string(),
  attempts: z.number(),
  startedAt: z.string(),
  step: z.string().optional(),
  /** The task's GPUs, as index:UUID. */
  gpus: z.array(z.string()).optional(),
});
export type JournalEntry = z.infer<typeof JournalEntrySchema>;

/**
 * A small journal of the tasks in progress: one file each, replaced atomically at every
 * step and removed when the task ends. What is left at start-up was interrupted.
 */
export class Journal {
  private readonly dir: string;
  /** Per task: how many runs of this worker ended while running it (see noteInterrupted). */
  private readonly interruptedDir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'journal');
    this.interruptedDir = join(stateDir, 'interrupted');
  }

  async open(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await mkdir(this.interruptedDir, { recursive: true, mode: 0o700 });
  }

  private interruptedFile(taskUuid: string): string {
    return join(this.interruptedDir, taskUuid.replace(/[^0-9a-zA-Z-]/g, '_'));
  }

  /**
   * Counts a run of this worker that ended (crashed, killed) while it ran the task, and
   * returns the count. It survives restarts, so a task that keeps ending the worker is
   * noticed though NSQ's attempts count every hand-back too.
   */
  async noteInterrupted(taskUuid: string): Promise<number> {
    const times = (await this.interruptions(taskUuid)) + 1;
    const file = this.interruptedFile(taskUuid);
    await writeFile(`${file}.tmp`, String(times), { mode: 0o600 });
    await rename(`${file}.tmp`, file);
    return times;
  }

  async interruptions(taskUuid: string): Promise<number> {
    const text = await readFile(this.interruptedFile(taskUuid), 'utf8').catch(() => '0');
    const times = Number.parseInt(text, 10);
    return Number.isFinite(times) && times > 0 ? times : 0;
  }

  /** The task ended in this run (done, failed, requeued): its count starts again. */
  async forgetInterruptions(taskUuid: string): Promise<void> {
    await rm(this.interruptedFile(taskUuid), { force: true });
  }

  /** Counts of tasks not seen for `maxAgeMs` (run elsewhere since, or gone) are dropped. */
  async pruneInterruptions(maxAgeMs: number, now = Date.now()): Promise<void> {
    const names = await readdir(this.interruptedDir).catch(() => [] as string[]);
    for (const name of names) {
      const file = join(this.interruptedDir, name);
      const info = await stat(file).catch(() => undefined);
      if (info && now - info.mtimeMs > maxAgeMs) await rm(file, { force: true });
    }
  }

  private file(messageId: string): string {
    // Message ids are 16 hex characters from nsqd; keep anything else out of the path.
    return join(this.dir, `${messageId.replace(/[^0-9a-zA-Z]/g, '_')}.json`);
  }

  async write(entry: JournalEntry): Promise<void> {
    const file = this.file(entry.messageId);
    const tmp = `${file}.tmp`;
    await writeFile(tmp, JSON.stringify(entry), { mode: 0o600 });
    await rename(tmp, file);
  }

  async remove(messageId: string): Promise<void> {
    await rm(this.file(messageId), { force: true });
  }

  /** The tasks in progress now, as written so far; files being replaced or unreadable are skipped. */
  async list(): Promise<JournalEntry[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const entries: JournalEntry[] = [];
    for (const name of names.filter((n) => n.endsWith('.json'))) {
      try {
        entries.push(
          JournalEntrySchema.parse(JSON.parse(await readFile(join(this.dir, name), 'utf8'))),
        );
      } catch {
        // removed meanwhile, or not a journal entry
      }
    }
    return entries;
  }

  /** Reads and clears what a previous run left: the tasks it did not finish. */
  async takeLeftovers(): Promise<{ entries: JournalEntry[]; unreadable: string[] }> {
    const entries: JournalEntry[] = [];
    const unreadable: string[] = [];
    for (const name of await readdir(this.dir)) {
      const file = join(this.dir, name);
      try {
        if (name.endsWith('.json'))
          entries.push(JournalEntrySchema.parse(JSON.parse(await readFile(file, 'utf8'))));
      } catch {
        unreadable.push(name);
      }
      await rm(file, { force: true });
    }
    return { entries, unreadable };
  }
}
