import { describe, expect, it } from 'vitest';
import { HttpService, serviceBaseUrl } from '../../src/clients/http.js';
import { WorkerError } from '../../src/errors.js';
import { startStorageServer } from '../support/storage-server.js';

describe('serviceBaseUrl', () => {
  it.each([
    ['storage.example.org', 80, 'http://storage.example.org/'],
    ['storage.example.org', 8080, 'http://storage.example.org:8080/'],
    ['http://10.0.0.5', 8081, 'http://10.0.0.5:8081/'],
    ['https://storage.example.org', 80, 'https://storage.example.org/'],
    ['https://storage.example.org', 8443, 'https://storage.example.org:8443/'],
    ['https://storage.example.org:9443', 80, 'https://storage.example.org:9443/'],
    ['storage.example.org:7000', 80, 'http://storage.example.org:7000/'],
    ['https://example.org/storage/', 80, 'https://example.org/storage/'],
    ['  [::1] ', 9000, 'http://[::1]:9000/'],
  ])('reads host %j with port %i as %s', (host, port, url) => {
    expect(serviceBaseUrl('storage', host, port).href).toBe(url);
  });

  it('refuses hosts it cannot use, saying why', () => {
    expect(() => serviceBaseUrl('storage', 'ftp://x', 80)).toThrow('must use http:// or https://');
    expect(() => serviceBaseUrl('storage', 'https://me:pw@x', 80)).toThrow(WorkerError);
    expect(() => serviceBaseUrl('orchestrator', 'x', 0)).toThrow(
      'orchestrator port 0 is not a TCP port',
    );
    expect(() => serviceBaseUrl('storage', 'http://', 80)).toThrow('is not a host name or URL');
  });
});

describe('HttpService', () => {
  it('describes an https service without its credentials', async () => {
    const service = new HttpService('storage', {
      host: 'https://example.org/api',
      port: 80,
      user: 'u',
      password: 'topsecret',
    });
    expect(service.description).toBe('storage https://example.org/api');
    await service.close();
    await service.close(); // twice is fine
  });

  it('sends requests under the path prefix of the host', async () => {
    const server = await startStorageServer();
    const service = new HttpService('storage', {
      host: `http://127.0.0.1:${server.port}/prefix/`,
      port: 80,
      user: 'u',
      password: 'p',
    });
    const status = await service.sendAndDrain({ method: 'GET', path: '/health', ok: [200, 404] });
    await service.close();
    await server.close();
    expect(status).toBe(404);
    expect(server.requests[0]?.path).toBe('/prefix/health');
  });

  it('explains TLS spoken to a plain HTTP port as lasting trouble, with a hint', async () => {
    const server = await startStorageServer();
    const service = new HttpService('storage', {
      host: `https://127.0.0.1`,
      port: server.port,
      user: 'u',
      password: 'p',
      getAttempts: 1,
      timeoutMs: 5000,
    });
    const error = await service
      .sendAndDrain({ method: 'GET', path: '/health', ok: [200] })
      .catch((e: unknown) => e);
    await service.close();
    await server.close();
    expect(error).toBeInstanceOf(WorkerError);
    expect((error as WorkerError).message).toBe(
      'storage GET /health: TLS failed (ERR_SSL_WRONG_VERSION_NUMBER)',
    );
    expect((error as WorkerError).retryable).toBe(false);
    expect((error as WorkerError).hint).toContain('https:// only for a TLS port');
  });

  it('tells each failed try by its status or kind, and nothing of a call the worker cancelled', async () => {
    const server = await startStorageServer();
    const told: string[] = [];
    const service = new HttpService('storage', {
      host: '127.0.0.1',
      port: server.port,
      user: 'u',
      password: 'p',
      retryDelayMs: 1,
      onError: (name, code) => told.push(`${name} ${code}`),
    });
    server.fault('GET /health', { status: 503, times: 2 });
    expect(await service.sendAndDrain({ method: 'GET', path: '/health', ok: [200] })).toBe(200);
    server.fault('GET /meta', { stream: { status: 200, chunk: '<html>', count: 1 } });
    await service.sendForJson({ method: 'GET', path: '/meta', ok: [200] }).catch(() => undefined);
    server.fault('GET /slow', { delayMs: 5000 });
    const cancel = new AbortController();
    const call = service.sendAndDrain({
      method: 'GET',
      path: '/slow',
      ok: [200],
      signal: cancel.signal,
    });
    setTimeout(() => cancel.abort(), 100);
    await call.catch(() => undefined);
    await service.close();
    await server.close();
    // Each try of the GET counts, so the one retried twice is told twice.
    expect(told).toEqual(['storage 503', 'storage 503', 'storage bad_answer']);
    const down = new HttpService('orchestrator', {
      host: '127.0.0.1',
      port: server.port,
      user: 'u',
      password: 'p',
      onError: (name, code) => told.push(`${name} ${code}`),
    });
    await down
      .sendAndDrain({ method: 'POST', path: '/worker/x', ok: [200] })
      .catch(() => undefined);
    await down.close();
    expect(told.at(-1)).toBe('orchestrator connection');
  });
});
