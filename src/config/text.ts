// C0 controls but tab, DEL, and C1 controls (as code points, after UTF-8 decoding).
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching them is the point
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f-\u009f]/g;

/**
 * Makes a line of untrusted output (a container's, a build's) harmless on a terminal and
 * in a text log: each control character but tab becomes a visible escape such as `\x1b`,
 * so an OSC title, a clear-screen, a carriage return that overwrites the line, or a C1
 * control reaches no terminal as a command. Invalid UTF-8 was already replaced by U+FFFD
 * when the bytes were decoded.
 */
export function cleanLine(line: string): string {
  return line.replace(CONTROL, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}
