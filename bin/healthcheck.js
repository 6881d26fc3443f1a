#!/usr/bin/env node
// The image's HEALTHCHECK: GET /healthz of the worker's metrics server, where
// COMPUTE_WORKER_METRICS_ADDRESS sets one (a wildcard host is asked on loopback).
// Without it the worker serves no health check, and the container counts as healthy.
import { request } from 'node:http';

const address = process.env.COMPUTE_WORKER_METRICS_ADDRESS?.trim();
if (!address) process.exit(0);
const { parseListenAddress } = await import('../dist/src/worker/metrics-server.js');
const at = parseListenAddress(address);
const host = at.host === '0.0.0.0' || at.host === '::' ? '127.0.0.1' : at.host;
const req = request({ host, port: at.port, path: '/healthz', timeout: 4000 }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
req.on('timeout', () => req.destroy(new Error('no answer in 4s')));
req.on('error', (error) => {
  process.stderr.write(`healthcheck: ${error.message}\n`);
  process.exit(1);
});
req.end();
