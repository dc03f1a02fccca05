// Build the kernel into a WebAssembly component with componentize-js (no
// downloads at build time). Run by scripts/build-kernels:
//   FIREDRILL_WIT=<wit dir, relative to here> OUT=<file.wasm> node build.mjs
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';

const { component } = await componentize({
  sourcePath: 'kernel.js',
  witPath: process.env.FIREDRILL_WIT ?? 'wit',
  worldName: 'kernel',
  // A kernel reaches the world only through the firedrill host.
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
await writeFile(process.env.OUT ?? 'kernel.wasm', component);
console.log(`built ${process.env.OUT ?? 'kernel.wasm'} (${component.length} bytes)`);
