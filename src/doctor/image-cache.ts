import { formatSize } from '../config/size.js';
import { ImageCache, type ImageCacheOptions } from '../engine/image-cache.js';
import type { Engine } from '../engine/types.js';
import { type Check, pass, warn } from './check.js';

/** The images this worker built, against --image-cache-size. Read only: doctor removes nothing. */
export async function imageCacheCheck(
  engine: Engine,
  options: Omit<ImageCacheOptions, 'engine'>,
): Promise<Check> {
  try {
    const summary = await new ImageCache({ engine, ...options }).summary();
    const count = `${summary.images} image${summary.images === 1 ? '' : 's'}`;
    const message = `${count}, ${readableBytes(summary.bytes)} of ${formatSize(summary.maxBytes)}`;
    if (summary.bytes <= summary.maxBytes) return pass('image-cache', message);
    return warn(
      'image-cache',
      `${message}: over its bound`,
      'the worker removes the least recently used images after its next task; images that containers use stay',
    );
  } catch (error) {
    return warn(
      'image-cache',
      `the images of this worker cannot be listed: ${(error as Error).message}`,
    );
  }
}

/** 0 B, 512 B, 1.9 MiB, 48.2 GiB. */
export function readableBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}
