// Validates Kubernetes manifests offline against the API's schemas (kubernetes-models,
// generated from the Kubernetes OpenAPI definitions), every document of every file named
// on the command line. Exits 0 if all are valid, 1 naming each invalid one; a kind it has
// no schema for is an error too, so a typo in `kind` cannot pass unchecked.
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';
import * as apps from 'kubernetes-models/apps/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as core from 'kubernetes-models/v1';

const models = { 'apps/v1': apps, 'policy/v1': policy, v1: core };

let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of parseAllDocuments(readFileSync(file, 'utf8'))) {
    if (doc.errors.length) {
      console.error(`${file}: YAML: ${doc.errors.map(String).join('; ')}`);
      failed += 1;
      continue;
    }
    const object = doc.toJS();
    if (object === null) continue;
    const Model = models[object.apiVersion]?.[object.kind];
    if (!Model) {
      console.error(`${file}: no schema for ${object.apiVersion} ${object.kind}`);
      failed += 1;
      continue;
    }
    try {
      new Model(object).validate();
      console.log(`${file}: ${object.kind} ${object.metadata?.name}: valid`);
    } catch (e) {
      console.error(`${file}: ${object.kind} ${object.metadata?.name}: ${e.message}`);
      failed += 1;
    }
  }
}
process.exit(failed ? 1 : 0);
