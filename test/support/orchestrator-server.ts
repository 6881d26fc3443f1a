import type { IncomingMessage, ServerResponse } from 'node:http';
import {
  type RecordedRequest,
  readBody,
  readJsonObject,
  type StandIn,
  type StandInOptions,
  sendJson,
  startStandIn,
} from './http-stand-in.js';

/**
 * An orchestrator that speaks SPEC.md section 4 strictly, for tests: JSON POSTs with
 * Basic Auth answered 200, task status todo -> pending (claimed) -> done or failed,
 * and 400 for a claim of a task that is not todo.
 */

export type TaskKind = 'learnuplet' | 'preduplet';
export type TaskStatus = 'todo' | 'pending' | 'done' | 'failed';

export interface TrackedTask {
  kind: TaskKind;
  status: TaskStatus;
  worker?: string;
  /** The body of the done or failed report. */
  report?: Record<string, unknown>;
}

export interface OrchestratorServerOptions extends StandInOptions {
  /** Treat an unknown uuid as a todo task of the kind asked for (default: 404). */
  acceptUnknownTasks?: boolean;
}

export interface OrchestratorServer extends StandIn {
  addTask(kind: TaskKind, uuid: string, status?: TaskStatus): void;
  task(uuid: string): TrackedTask | undefined;
}

const DONE_KIND: Record<string, TaskKind> = { learndone: 'learnuplet', preddone: 'preduplet' };

function isScores(value: unknown): boolean {
  return (
    typeof value === 'object' &&
    value !== null &&
    Object.values(value).every((v) => typeof v === 'number' && Number.isFinite(v))
  );
}

export async function startOrchestratorServer(
  options: OrchestratorServerOptions = {},
): Promise<OrchestratorServer> {
  const tasks = new Map<string, TrackedTask>();

  function find(kind: TaskKind, uuid: string): TrackedTask | undefined {
    let task = tasks.get(uuid);
    if (!task && options.acceptUnknownTasks) {
      task = { kind, status: 'todo' };
      tasks.set(uuid, task);
    }
    return task?.kind === kind ? task : undefined;
  }

  async function route(
    req: IncomingMessage,
    res: ServerResponse,
    url: URL,
    record: RecordedRequest,
  ) {
    const claim = /^\/worker\/(learnuplet|preduplet)\/([^/]+)$/.exec(url.pathname);
    const done = /^\/(learndone|preddone)\/([^/]+)$/.exec(url.pathname);
    if (req.method !== 'POST' || (!claim && !done)) {
      await readBody(req);
      return sendJson(res, 404, { error: `no route ${req.method} ${url.pathname}` });
    }
    const body = await readJsonObject(req);
    record.body = body;
    if (typeof body === 'string') return sendJson(res, 400, { error: body });
    if (claim) {
      const [, kind, uuid] = claim as unknown as [string, TaskKind, string];
      const task = find(kind, uuid);
      if (!task) return sendJson(res, 404, { error: `${kind} ${uuid} not found` });
      if (typeof body.worker !== 'string' || body.worker === '') {
        return sendJson(res, 400, { error: 'worker must be a non-empty string' });
      }
      if (task.status !== 'todo') {
        return sendJson(res, 400, { error: `${kind} ${uuid} is ${task.status}, not todo` });
      }
      task.status = 'pending';
      task.worker = body.worker;
      return sendJson(res, 200, { uuid, status: task.status, worker: task.worker });
    }
    const [, route, uuid] = done as unknown as [string, string, string];
    const kind = DONE_KIND[route] as TaskKind;
    const task = find(kind, uuid);
    if (!task) return sendJson(res, 404, { error: `${kind} ${uuid} not found` });
    if (body.status === 'failed') {
      if (task.status === 'done')
        return sendJson(res, 400, { error: `${kind} ${uuid} is done already` });
    } else if (body.status === 'done') {
      if (task.status !== 'pending') {
        return sendJson(res, 400, { error: `${kind} ${uuid} is ${task.status}, not pending` });
      }
      const valid =
        kind === 'learnuplet'
          ? typeof body.perf === 'number' && isScores(body.train_perf) && isScores(body.test_perf)
          : typeof body.prediction_storage_uuid === 'string' && body.prediction_storage_uuid !== '';
      if (!valid) return sendJson(res, 400, { error: `invalid ${route} body` });
    } else {
      return sendJson(res, 400, { error: 'status must be done or failed' });
    }
    task.status = body.status;
    task.report = body;
    sendJson(res, 200, { uuid, status: task.status });
  }

  const base = await startStandIn('orchestrator', options, route);
  return {
    ...base,
    addTask(kind, uuid, status = 'todo') {
      tasks.set(uuid, { kind, status });
    },
    task: (uuid) => tasks.get(uuid),
  };
}
