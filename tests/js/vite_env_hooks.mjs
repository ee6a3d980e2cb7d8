// Module hooks that load one browser file the way Vite builds it, so a Laravel app's
// resources/js file runs in Node as written: `import.meta.env` holds the VITE_ variables
// (Vite replaces each `import.meta.env.X` with its value), the file is an ES module (a
// Laravel app's package.json says "type": "module"), and its bare imports ('laravel-echo',
// 'pusher-js') resolve from tests/js/node_modules, as they would from the app's own.
// Registered by quickstart_laravel.test.mjs with node:module's register().
let env = {};
let target = '';
let resolveFrom = '';

export function initialize(data) {
  ({ env, target, resolveFrom } = data);
}

export async function resolve(specifier, context, next) {
  const bare = !/^(\.{0,2}\/|[a-z]+:)/.test(specifier);
  if (context.parentURL === target && bare) return next(specifier, { ...context, parentURL: resolveFrom });
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (url !== target) return next(url, context);
  const { source } = await next(url, { ...context, format: 'module' });
  return {
    format: 'module',
    shortCircuit: true,
    source: `import.meta.env = ${JSON.stringify(env)};\n${source}`,
  };
}
