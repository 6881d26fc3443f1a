import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { usernsRangeCheck } from '../../src/doctor/userns.js';

// The subordinate ranges each container's user namespace is drawn from, read from files.
describe('doctor: userns-range', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cw-subid-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  const rootful = { name: 'podman' as const, rootless: false };
  const user = { user: '1000:1000' };
  const check = async (subuid: string, subgid = subuid) => {
    const files = { subuid: join(dir, 'subuid'), subgid: join(dir, 'subgid') };
    await writeFile(files.subuid, subuid);
    await writeFile(files.subgid, subgid);
    return usernsRangeCheck(rootful, user, files);
  };
  const users = 'cwrootless:100000:65536\ncwbuild:165536:65536\n';

  it('passes a large containers range above every user range', async () => {
    const c = await check(`${users}containers:2147483647:2147483648\n`);
    expect(c).toMatchObject({ status: 'pass' });
    expect(c.message).toMatch(/room for 32768 user namespaces/);
  });

  it('fails without a containers entry in either file, naming the file', async () => {
    const none = await check(users);
    expect(none).toMatchObject({ status: 'fail' });
    expect(none.message).toMatch(/subuid has no `containers` entry/);
    expect(none.hint).toMatch(/containers:2147483647:2147483648/);
    const noGid = await check(`${users}containers:2147483647:2147483648\n`, users);
    expect(noGid.message).toMatch(/subgid has no `containers` entry/);
  });

  it('fails a range too small for one full-size image, or one overlapping a user', async () => {
    expect((await check('containers:2147483647:1024\n')).message).toMatch(/1024 ids, fewer/);
    const overlap = await check(`${users}containers:160000:2000000\n`);
    expect(overlap).toMatchObject({ status: 'fail' });
    expect(overlap.message).toMatch(/overlaps the range of cwrootless/);
  });

  it('warns when few namespaces fit', async () => {
    expect(await check('containers:2147483647:131072\n')).toMatchObject({ status: 'warn' });
  });

  it("rootless: the user's own range, from podman info", async () => {
    const rootless = { name: 'podman' as const, rootless: true };
    const ok = await usernsRangeCheck(
      { ...rootless, subordinateIds: { uids: 65536, gids: 65536 } },
      user,
    );
    expect(ok).toMatchObject({ status: 'pass' });
    expect(ok.message).toMatch(/room for 64 containers of 1024 ids/);
    const small = await usernsRangeCheck(
      { ...rootless, subordinateIds: { uids: 2048, gids: 2048 } },
      user,
    );
    expect(small).toMatchObject({ status: 'fail' });
  });

  it('docker: a warning that names what it lacks, with or without userns-remap', async () => {
    const plain = await usernsRangeCheck({ name: 'docker', rootless: false }, user);
    expect(plain).toMatchObject({ status: 'warn' });
    expect(plain.message).toMatch(/without userns-remap.*RLIMIT_NPROC/);
    const remap = await usernsRangeCheck(
      { name: 'docker', rootless: false, usernsRemap: true },
      user,
    );
    expect(remap).toMatchObject({ status: 'warn' });
    expect(remap.message).toMatch(/shares the daemon's one range/);
  });
});
