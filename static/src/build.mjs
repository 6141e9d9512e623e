// Builds the widget, the console, the monitor and the demo page from static/src into static/.
// `npm run build` (once) or `npm run watch` (rebuild on change). The output is not committed.
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const src = dirname(fileURLToPath(import.meta.url));
const out = dirname(src);
const watch = process.argv.includes('--watch');

const common = {
  bundle: true,
  minify: true,
  sourcemap: 'linked',
  format: 'iife',
  // Browsers of the last few years; the widget runs inside customers' own products.
  target: ['chrome100', 'firefox100', 'safari15', 'edge100'],
  loader: { '.css': 'text' },
  legalComments: 'eof',
  logLevel: 'warning',
};

const builds = [
  { ...common, entryPoints: [join(src, 'widget/main.js')], outfile: join(out, 'widget.js') },
  { ...common, entryPoints: [join(src, 'console/main.js')], outfile: join(out, 'console/console.js') },
  {
    ...common,
    entryPoints: [join(src, 'console/console.css')],
    outfile: join(out, 'console/console.css'),
    loader: {},
    format: undefined,
  },
  { ...common, entryPoints: [join(src, 'monitor/main.js')], outfile: join(out, 'monitor/monitor.js') },
  { ...common, entryPoints: [join(src, 'monitor/monitor.css')], outfile: join(out, 'monitor/monitor.css'),
    loader: {}, format: undefined },
  { ...common, entryPoints: [join(src, 'demo/demo.js')], outfile: join(out, 'demo/demo.js') },
  { ...common, entryPoints: [join(src, 'demo/demo.css')], outfile: join(out, 'demo/demo.css'),
    loader: {}, format: undefined },
];

const pages = [
  ['console/index.html', 'console/index.html'],
  ['monitor/index.html', 'monitor/index.html'],
  ['demo/index.html', 'demo/index.html'],
];

async function copyPages() {
  for (const [from, to] of pages) {
    await mkdir(dirname(join(out, to)), { recursive: true });
    await copyFile(join(src, from), join(out, to));
  }
}

if (watch) {
  for (const options of builds) {
    const ctx = await esbuild.context({ ...options, logLevel: 'info' });
    await ctx.watch();
  }
  await copyPages();
  console.log('watching static/src (pages are copied at start only)');
} else {
  await Promise.all(builds.map((options) => esbuild.build(options)));
  await copyPages();
  // A stamp newer than every source tells make that the build is current.
  await writeFile(join(out, '.built'), new Date().toISOString() + '\n');
  console.log('built static/widget.js, static/console/, static/monitor/, static/demo/');
}
