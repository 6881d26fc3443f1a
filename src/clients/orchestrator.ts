import { WorkerError } from '../errors.js';
import { NIL_UUID } from '../schemas.js';
import {
  answerWords,
  type CredentialAnswers,
  type HttpCall,
  HttpService,
  type HttpServiceOptions,
} from './http.js';
import type { FailedReport, LearnDone, OrchestratorClient, TaskUsage } from './types.js';

const DONE_ROUTE = { learn: 'learndone', predict: 'preddone' } as const;

/** The orchestrator over HTTP (SPEC.md section 4): every call a JSON POST answered 200. */
export class HttpOrchestratorClient implements OrchestratorClient {
  private readonly http: HttpService;

  constructor(options: HttpServiceOptions) {
    this.http = new HttpService('orchestrator', options);
  }

  get description(): string {
    return this.http.description;
  }

  /**
   * A claim of the nil task for no worker: no task has that uuid, so an orchestrator that
   * takes the credentials answers 400 or 404, and one that checks them refuses a stranger.
   */
  async credentialAnswers(signal?: AbortSignal): Promise<CredentialAnswers> {
    return this.http.credentialAnswers({
      ...this.jsonPost(`/worker/learnuplet/${NIL_UUID}`, { worker: '' }, 'the nil task', signal),
      ok: [],
    });
  }

  async claim(
    kind: 'learnuplet' | 'preduplet',
    uuid: string,
    workerId: string,
    signal?: AbortSignal,
  ): Promise<void> {
    const path = `/worker/${kind}/${encodeURIComponent(uuid)}`;
    // The orchestrator answers 400 when the task is no longer todo.
    const response = await this.http.send({
      ...this.jsonPost(path, { worker: workerId }, `${kind} ${uuid}`, signal),
      ok: [200, 400],
    });
    if (response.statusCode === 200) {
      // Taken: an answer body cut short changes nothing.
      await response.body.dump({ limit: 2048 }).catch(() => undefined);
      return;
    }
    const said = await answerWords(response.body);
    throw new WorkerError(
      'TASK_TAKEN',
      `${kind} ${uuid} is no longer todo: another worker took it, or it is finished`,
      { detail: said ? `orchestrator: ${said}` : undefined },
    );
  }

  async learnDone(
    uuid: string,
    result: LearnDone,
    usage?: TaskUsage,
    signal?: AbortSignal,
  ): Promise<void> {
    const body = {
      status: 'done',
      perf: result.perf,
      train_perf: result.train_perf,
      test_perf: result.test_perf,
      ...(usage ? { usage } : {}),
    };
    await this.post(`/learndone/${encodeURIComponent(uuid)}`, body, `learnuplet ${uuid}`, signal);
  }

  async predDone(
    uuid: string,
    predictionUuid: string,
    usage?: TaskUsage,
    signal?: AbortSignal,
  ): Promise<void> {
    const body = {
      status: 'done',
      prediction_storage_uuid: predictionUuid,
      ...(usage ? { usage } : {}),
    };
    await this.post(`/preddone/${encodeURIComponent(uuid)}`, body, `preduplet ${uuid}`, signal);
  }

  /**
   * `{"status":"failed"}` plus SPEC.md section 7's `error` and `usage`: the orchestrator's
   * JSON decoder ignores fields it does not know, so an older one reads it as before.
   */
  async reportFailed(
    kind: 'learn' | 'predict',
    uuid: string,
    failure: FailedReport,
    signal?: AbortSignal,
  ): Promise<void> {
    const path = `/${DONE_ROUTE[kind]}/${encodeURIComponent(uuid)}`;
    await this.post(path, failedBody(failure), `${kind} task ${uuid}`, signal);
  }

  private jsonPost(path: string, body: unknown, what: string, signal?: AbortSignal): HttpCall {
    return {
      method: 'POST',
      path,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      ok: [200],
      signal,
      what,
    };
  }

  private async post(path: string, body: unknown, what: string, signal?: AbortSignal) {
    await this.http.sendAndDrain(this.jsonPost(path, body, what, signal));
  }

  async close(): Promise<void> {
    await this.http.close();
  }
}

/** The body of a failed report, as both orchestrators (HTTP and the local ledger) get it. */
export function failedBody(failure: FailedReport): Record<string, unknown> {
  return {
    status: 'failed',
    error: failure.error,
    ...(failure.usage ? { usage: failure.usage } : {}),
  };
}
