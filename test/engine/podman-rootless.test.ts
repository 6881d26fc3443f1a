import { defineConformanceSuite } from '../support/engine-conformance.js';
import { VARIANTS } from '../support/engine-variants.js';

defineConformanceSuite(VARIANTS['podman-rootless']);
