import { describe, expect, it } from 'vitest';
import { cleanLine, LineSplitter } from '../../src/engine/log-tail.js';

function split(...chunks: Buffer[]): string[] {
  const lines: string[] = [];
  const splitter = new LineSplitter((line) => lines.push(line));
  for (const chunk of chunks) splitter.write(chunk);
  splitter.end();
  return lines;
}

describe('LineSplitter: output made harmless for a terminal', () => {
  it('shows terminal commands as escapes instead of passing them on', () => {
    const osc = Buffer.from('\x1b]0;pwned title\x07after OSC\n');
    const clear = Buffer.from('\x1b[2J\x1b[Hcleared?\n');
    const overwrite = Buffer.from('loss: 0.9\rloss: 0.1\n');
    const del = Buffer.from('a\x7fb\x00c\x08d\n');
    expect(split(osc, clear, overwrite, del)).toEqual([
      '\\x1b]0;pwned title\\x07after OSC',
      '\\x1b[2J\\x1b[Hcleared?',
      'loss: 0.9\\x0dloss: 0.1',
      'a\\x7fb\\x00c\\x08d',
    ]);
  });

  it('escapes C1 controls, replaces invalid UTF-8, and keeps tabs and real characters', () => {
    // U+009B (CSI as one C1 code point, C2 9B in UTF-8); a lone 0x9b byte; é and 🙂.
    const c1 = Buffer.from([0xc2, 0x9b, 0x32, 0x4a, 0x0a]);
    const lone = Buffer.from([0x61, 0x9b, 0x62, 0xff, 0x0a]);
    const fine = Buffer.from('col\tcafé 🙂\r\n');
    expect(split(c1, lone, fine)).toEqual(['\\x9b2J', 'a\uFFFDb\uFFFD', 'col\tcafé 🙂']);
  });

  it('decodes a character split between chunks as that character', () => {
    const smile = Buffer.from('🙂\n');
    expect(split(smile.subarray(0, 2), smile.subarray(2))).toEqual(['🙂']);
    expect(split(Buffer.from([0x61, 0xe2, 0x82]))).toEqual(['a\uFFFD']);
  });

  it('cleans the last line that has no line break', () => {
    expect(split(Buffer.from('done\x1b[0m'))).toEqual(['done\\x1b[0m']);
  });

  it('leaves a clean line as it is', () => {
    expect(cleanLine('epoch 3/10\tloss=0.25 ✓')).toBe('epoch 3/10\tloss=0.25 ✓');
  });
});
