import { describe, expect, it } from 'vitest';
import { formatDuration, parseDuration } from '../../src/config/duration.js';
import { formatSize, parseSize } from '../../src/config/size.js';

describe('parseDuration', () => {
  it.each([
    ['20m', 1_200_000],
    ['1h30m', 5_400_000],
    ['7d', 604_800_000],
    ['1d12h', 129_600_000],
    ['15m0s', 900_000],
    ['1.5h', 5_400_000],
    ['300ms', 300],
    ['90', 90_000],
    ['0', 0],
    ['2h0m0.5s', 7_200_500],
  ])('reads %s as %d ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', 'm', '20x', '1h-5m', 'twenty minutes'])(
    'rejects "%s" with a message naming it',
    (text) => {
      expect(() => parseDuration(text)).toThrow(/invalid duration/);
    },
  );

  it('prints durations the way Go does', () => {
    expect(formatDuration(1_200_000)).toBe('20m0s');
    expect(formatDuration(5_400_000)).toBe('1h30m0s');
    expect(formatDuration(1500)).toBe('1.5s');
    expect(formatDuration(250)).toBe('250ms');
  });
});

describe('parseSize', () => {
  it('reads engine size syntax', () => {
    expect(parseSize('4g')).toBe(4 * 1024 ** 3);
    expect(parseSize('512m')).toBe(512 * 1024 ** 2);
    expect(parseSize('1.5G')).toBe(1.5 * 1024 ** 3);
    expect(parseSize('1024')).toBe(1024);
    expect(() => parseSize('4 gigs')).toThrow(/invalid size "4 gigs"/);
  });

  it('formats sizes for engine flags', () => {
    expect(formatSize(4 * 1024 ** 3)).toBe('4g');
    expect(formatSize(512 * 1024 ** 2)).toBe('512m');
    expect(formatSize(1000)).toBe('1000');
  });
});
