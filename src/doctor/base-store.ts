import type { Engine } from '../engine/types.js';
import { type Check, pass, skip, warn } from './check.js';
import { readableBytes } from './image-cache.js';

const NAME = 'base-store';

/**
 * The base store of untrusted builds: what it holds and takes on disk, and the copies of
 * bases the host no longer has, which the next untrusted build removes once their grace
 * is over. Read only: doctor changes nothing there.
 */
export async function baseStoreCheck(engine: Engine): Promise<Check> {
  try {
    const summary = await engine.baseStore();
    if (!summary) return skip(NAME, 'this engine builds in its own store: there is no base store');
    if (!summary.exists) {
      return pass(NAME, `${summary.root}: none yet (made by the first untrusted build)`);
    }
    const count = `${summary.images} image${summary.images === 1 ? '' : 's'}`;
    const message = `${summary.root}: ${count}, ${readableBytes(summary.bytes)} on disk`;
    if (summary.missing === 0) return pass(NAME, message);
    return pass(
      NAME,
      `${message}; ${summary.missing} of them no longer on the host, removed by an untrusted build an hour (or twice --build-timeout) after they went`,
    );
  } catch (error) {
    return warn(NAME, `the base store cannot be read: ${(error as Error).message}`);
  }
}
