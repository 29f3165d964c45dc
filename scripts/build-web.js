// Bundles the browser code (SDK, demo page, widget) with esbuild into web/dist/.
const { build } = require('esbuild');
const path = require('node:path');
const web = path.join(__dirname, '..', 'web');
const common = { bundle: true, minify: true, sourcemap: true, target: ['chrome100', 'firefox100', 'safari15'], logLevel: 'warning' };
Promise.all([
  build({ ...common, entryPoints: [path.join(web, 'src/sdk/index.ts')], format: 'iife', globalName: 'GatewaySDK', outfile: path.join(web, 'dist/gateway-sdk.js') }),
  build({ ...common, entryPoints: [path.join(web, 'src/sdk/index.ts')], format: 'esm', outfile: path.join(web, 'dist/gateway-sdk.mjs') }),
  build({ ...common, entryPoints: [path.join(web, 'src/demo/main.ts')], format: 'iife', outfile: path.join(web, 'dist/demo.js') }),
  ...(require('node:fs').existsSync(path.join(web, 'src/widget/widget.ts'))
    ? [build({ ...common, entryPoints: [path.join(web, 'src/widget/widget.ts')], format: 'iife', outfile: path.join(web, 'dist/widget.js') })]
    : []),
]).catch((err) => { console.error(err.message); process.exit(1); });
