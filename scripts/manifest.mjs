// Writes oclif.manifest.json next to package.json: with it, the CLI knows its commands and
// flags without importing every command at start-up (`--version` and `--help` stay fast).
// Part of `npm run build`; the file is a build output, like dist/.
import { rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Config } from '@oclif/core';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const file = join(root, 'oclif.manifest.json');
// Built from the commands themselves, never from an older manifest.
await rm(file, { force: true });
const config = await Config.load({ root });
const plugin = config.getPluginsList().find((p) => p.root === config.root);
const manifest = await plugin._manifest();
await writeFile(file, `${JSON.stringify(manifest)}\n`);
