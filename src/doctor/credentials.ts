import type { CredentialAnswers } from '../clients/http.js';
import { type Check, fail, pass, warn } from './check.js';

/** A service of the worker that can say how it answers a call with and without credentials. */
export interface CredentialedService {
  readonly description: string;
  credentialAnswers?(signal?: AbortSignal): Promise<CredentialAnswers>;
}

const REFUSED = new Set([401, 403]);

/**
 * The worker's credentials work and the service needs them. A health call proves neither:
 * storage's /health answers anyone, and any HTTP answer of the orchestrator would pass. So
 * one call that needs credentials is sent twice, with the worker's and without: the first
 * must not be refused, the second must be. A service that answers a stranger is a warning
 * (whoever reaches it reads the hidden targets), a refusal of ours a failure: every task
 * would end as the worker's fault.
 */
export async function checkCredentials(
  name: 'storage' | 'orchestrator',
  service: CredentialedService,
): Promise<Check> {
  const check = `${name}-credentials`;
  if (!service.credentialAnswers) {
    return pass(check, `${service.description} is local: no credentials`);
  }
  let answers: CredentialAnswers;
  try {
    answers = await service.credentialAnswers(AbortSignal.timeout(10_000));
  } catch (error) {
    return fail(check, `${service.description} could not be asked with credentials`, error);
  }
  if (REFUSED.has(answers.ours)) {
    return fail(
      check,
      `${service.description} refuses the worker's credentials (HTTP ${answers.ours})`,
      undefined,
      `check --${name}-user and --${name}-password (or --${name}-password-file)`,
    );
  }
  if (answers.ours >= 500) {
    return fail(
      check,
      `${service.description} answered a call with the worker's credentials with HTTP ${answers.ours}`,
    );
  }
  if (!REFUSED.has(answers.without)) {
    return warn(
      check,
      `${service.description} accepts the worker's credentials, but answered a call without any with HTTP ${answers.without}: it does not check credentials`,
      `turn on Basic authentication in the ${name} service: whoever reaches it can act as a worker`,
    );
  }
  return pass(
    check,
    `${service.description} accepts the worker's credentials and refuses a call without them`,
  );
}
