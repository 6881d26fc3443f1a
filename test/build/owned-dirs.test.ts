import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { handedDirs, readOwnedFile, removeTree } from '../../src/build/owned-dirs.js';
import { baseStoreFor, ENGINE_TMP_BASE, makeRunRootLink } from '../../src/build/store.js';
import { findBuildUser } from '../../src/build/user.js';
import { createEngine } from '../../src/container-engine.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const variant = VARIANTS['podman-rootful'];

/** Runs a command as the build user: what a build escape can do. */
function asUser(user: { uid: number; gid: number }, args: string[]): void {
  execFileSync(args[0] as string, args.slice(1), { uid: user.uid, gid: user.gid, cwd: '/' });
}
const asRoot = process.getuid?.() === 0;

/**
 * The build user is what a build escape reaches. Whatever it leaves in its own folders (a
 * link where the worker makes a folder, a storage.conf that puts its store anywhere), the
 * worker, as root, gives it nothing it could not have made itself.
 */
describe.skipIf(!asRoot || unavailableUnlessRequired(variant))(
  "the build user's folders, made and removed by root",
  () => {
    const dir = mkdtempSync(join(ENGINE_TMP_BASE, 'cw-owned-dirs-test-'));
    chmodSync(dir, 0o711); // the build user's homes of the test are in it
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    /** A root-owned folder with a file in it, that nothing here may hand over or empty. */
    const victim = (name: string) => {
      const path = join(dir, name);
      mkdirSync(path, { mode: 0o755 });
      writeFileSync(join(path, 'keep'), 'root');
      return path;
    };
    const expectUntouched = (path: string) => {
      expect(statSync(path).uid).toBe(0);
      expect(readdirSync(path)).toEqual(['keep']);
      expect(statSync(join(path, 'keep')).uid).toBe(0);
    };

    /**
     * The build user with a home of the test's own, whose storage.conf puts its store in
     * `<home>/g`, a folder of that user's: where the base store goes beside it.
     */
    async function userWithStore(name: string) {
      const user = await findBuildUser('auto');
      if (!user) return undefined;
      const home = join(dir, name);
      const g = join(home, 'g');
      mkdirSync(join(home, '.config', 'containers'), { recursive: true });
      mkdirSync(g);
      writeFileSync(
        join(home, '.config', 'containers', 'storage.conf'),
        `[storage]\ndriver = "overlay"\ngraphroot = "${join(g, 'storage')}"\nrunroot = "${join(home, 'run')}"\n`,
      );
      for (const p of [home, join(home, '.config'), join(home, '.config', 'containers'), g]) {
        chownSync(p, user.uid, user.gid);
      }
      chownSync(join(home, '.config', 'containers', 'storage.conf'), user.uid, user.gid);
      return { ...user, home, g };
    }

    async function hostContext() {
      const engine = await createEngine(variant.options);
      return {
        cli: { name: 'podman' as const, path: engine.info.path },
        info: engine.info,
        options: { ...variant.options, callTimeoutMs: 60_000 },
      };
    }

    it('a link planted where the base store goes is never followed with root rights', async (t) => {
      const user = await userWithStore('planted');
      if (!user) return t.skip();
      const tmpTarget = victim('tmp-target');
      const lockTarget = victim('lock-target');
      symlinkSync(tmpTarget, join(user.g, 'compute-worker-bases-tmp'));
      symlinkSync(lockTarget, join(user.g, 'compute-worker-bases.lock'));
      const bases = await baseStoreFor(await hostContext(), user);
      expect(bases.spec.root).toBe(join(user.g, 'compute-worker-bases'));
      // Made by the user itself; the lock in a folder of root's.
      expect(statSync(bases.spec.root).uid).toBe(user.uid);
      expect(bases.lockDir.startsWith('/run/compute-worker/')).toBe(true);
      expectUntouched(tmpTarget);
      expectUntouched(lockTarget);
    });

    it('a link planted as the base store itself is not handed over either', async (t) => {
      const user = await userWithStore('planted-root');
      if (!user) return t.skip();
      const target = victim('root-target');
      symlinkSync(target, join(user.g, 'compute-worker-bases'));
      await baseStoreFor(await hostContext(), user);
      expectUntouched(target);
    });

    it("a dead build's run folder that is a link is refused, its target untouched", async (t) => {
      const user = await findBuildUser('auto');
      if (!user) return t.skip();
      const build = join(dir, 'dead-build');
      mkdirSync(join(build, 'store'), { recursive: true, mode: 0o700 });
      chownSync(join(build, 'store'), user.uid, user.gid);
      const target = victim('run-target');
      symlinkSync(target, join(build, 'store', 'run'));
      await expect(makeRunRootLink(build, user)).rejects.toThrow(/is not a folder/);
      expectUntouched(target);
      // A fresh one is made and handed over innermost first.
      const fresh = join(dir, 'fresh-build');
      mkdirSync(fresh, { mode: 0o711 });
      await handedDirs([join(fresh, 'store'), join(fresh, 'store', 'run')], user);
      for (const p of ['store', 'store/run']) {
        const info = lstatSync(join(fresh, p));
        expect(info.isDirectory()).toBe(true);
        expect(info.uid).toBe(user.uid);
      }
    });

    it("a folder another user planted under a dead build's name is not looked into at start-up", async (t) => {
      const user = await findBuildUser('auto');
      if (!user) return t.skip();
      const owner = randomUUID();
      const target = victim('sweep-target');
      mkdirSync(join(target, 'run'));
      mkdirSync(join(target, 'root'));
      // As the build user: /var/tmp/cw-build-tmp-<worker id>.x/user/store -> the victim.
      const planted = join(ENGINE_TMP_BASE, `cw-build-tmp-${owner}.planted`);
      asUser(user, ['mkdir', '-p', join(planted, 'user')]);
      asUser(user, ['ln', '-s', target, join(planted, 'user', 'store')]);
      try {
        const engine = await createEngine({ ...variant.options, owner });
        const swept = await engine.removeOrphanBuilds(owner);
        expect(swept.folders).toEqual([]);
        expect(statSync(join(target, 'run')).uid).toBe(0);
        expect(statSync(join(target, 'root')).uid).toBe(0);
      } finally {
        rmSync(planted, { recursive: true, force: true });
      }
    });

    it('a run-root link another user made, even pointing right, is made again as root', async (t) => {
      const user = await findBuildUser('auto');
      if (!user) return t.skip();
      const build = join(dir, 'link-build');
      mkdirSync(build, { mode: 0o711 });
      const first = await makeRunRootLink(build, user);
      rmSync(first);
      asUser(user, ['ln', '-s', join(build, 'store', 'run'), first]);
      expect(lstatSync(first).uid).toBe(user.uid);
      const again = await makeRunRootLink(build, user);
      expect(again).toBe(first);
      expect(lstatSync(again).uid).toBe(0);
      rmSync(again);
    });

    it('removes a tree without following the links in it', async () => {
      const target = victim('rm-target');
      const tree = join(dir, 'tree');
      mkdirSync(join(tree, 'a', 'b'), { recursive: true });
      symlinkSync(target, join(tree, 'a', 'b', 'link'));
      symlinkSync(join(target, 'keep'), join(tree, 'a', 'file-link'));
      await removeTree(tree);
      expect(existsSync(tree)).toBe(false);
      expectUntouched(target);
    });
  },
);

describe('a file the engine user writes, read by the worker', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cw-owned-file-test-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('is read when it is a plain file within the bound', async () => {
    writeFileSync(join(dir, 'plain.json'), '[]');
    expect(await readOwnedFile(join(dir, 'plain.json'))).toBe('[]');
    expect(await readOwnedFile(join(dir, 'plain.json'), 1)).toBeUndefined();
    expect(await readOwnedFile(join(dir, 'missing.json'))).toBeUndefined();
  });

  it('never waits on a FIFO, nor reads through a link or from a device', async () => {
    execFileSync('mkfifo', [join(dir, 'fifo.json')]);
    symlinkSync(join(dir, 'plain.json'), join(dir, 'link.json'));
    symlinkSync('/dev/zero', join(dir, 'zero.json'));
    const started = Date.now();
    for (const name of ['fifo.json', 'link.json', 'zero.json', '.']) {
      expect(await readOwnedFile(join(dir, name))).toBeUndefined();
    }
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
