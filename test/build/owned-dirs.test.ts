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
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { handedDirs, removeTree } from '../../src/build/owned-dirs.js';
import { baseStoreFor, ENGINE_TMP_BASE, makeRunRootLink } from '../../src/build/store.js';
import { findBuildUser } from '../../src/build/user.js';
import { createEngine } from '../../src/container-engine.js';
import { unavailableUnlessRequired, VARIANTS } from '../support/engine-variants.js';

const variant = VARIANTS['podman-rootful'];
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

    /** The build user with a home of the test's own, whose storage.conf puts its store at `graphRoot`. */
    async function userWithStore(name: string, graphRoot: string) {
      const user = await findBuildUser('auto');
      if (!user) return undefined;
      const home = join(dir, name);
      mkdirSync(join(home, '.config', 'containers'), { recursive: true });
      writeFileSync(
        join(home, '.config', 'containers', 'storage.conf'),
        `[storage]\ndriver = "overlay"\ngraphroot = "${graphRoot}"\nrunroot = "${join(home, 'run')}"\n`,
      );
      for (const p of [home, join(home, '.config'), join(home, '.config', 'containers')]) {
        chownSync(p, user.uid, user.gid);
      }
      chownSync(join(home, '.config', 'containers', 'storage.conf'), user.uid, user.gid);
      return { ...user, home };
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
      const home = join(dir, 'planted');
      const user = await userWithStore('planted', join(home, 'g', 'storage'));
      if (!user) return t.skip();
      mkdirSync(join(home, 'g'));
      chownSync(join(home, 'g'), user.uid, user.gid);
      const tmpTarget = victim('tmp-target');
      const lockTarget = victim('lock-target');
      symlinkSync(tmpTarget, join(home, 'g', 'compute-worker-bases-tmp'));
      symlinkSync(lockTarget, join(home, 'g', 'compute-worker-bases.lock'));
      const bases = await baseStoreFor(await hostContext(), user);
      expect(bases.spec.root).toBe(join(home, 'g', 'compute-worker-bases'));
      // Made by the user itself; the lock in a folder of root's.
      expect(statSync(bases.spec.root).uid).toBe(user.uid);
      expect(bases.lockDir.startsWith('/run/compute-worker/')).toBe(true);
      expectUntouched(tmpTarget);
      expectUntouched(lockTarget);
    });

    it('a link planted as the base store itself is not handed over either', async (t) => {
      const home = join(dir, 'planted-root');
      const user = await userWithStore('planted-root', join(home, 'g', 'storage'));
      if (!user) return t.skip();
      mkdirSync(join(home, 'g'));
      chownSync(join(home, 'g'), user.uid, user.gid);
      const target = victim('root-target');
      symlinkSync(target, join(home, 'g', 'compute-worker-bases'));
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
