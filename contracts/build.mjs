// Compiles the sandbox contracts with the pinned solcjs (offline, standard-json) and writes
// contracts/build/<Name>.json. Run from anywhere: `node contracts/build.mjs`.
// The outputs are committed, so Python never needs Node; re-running reproduces the same bytes.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const contractsDir = dirname(fileURLToPath(import.meta.url));
const repoRoot = resolve(contractsDir, "..");
const nodeModules = join(repoRoot, "node_modules");
const buildDir = join(contractsDir, "build");

// Cancun: the newest fork that both anvil 1.7 and BNB Chain mainnet run; later forks add nothing we use.
const EVM_VERSION = "cancun";
const CONTRACTS = ["FeeCollector", "Multicall3", "TokenFactory"];

// Source unit names are repo-relative so the metadata hash in the bytecode doesn't depend on the checkout path.
const sources = {};
for (const name of CONTRACTS) {
  const unit = `contracts/${name}.sol`;
  sources[unit] = { content: readFileSync(join(repoRoot, unit), "utf8") };
}

function findImports(path) {
  if (!path.startsWith("@openzeppelin/")) {
    return { error: `import not allowed: ${path} (only @openzeppelin/... from node_modules)` };
  }
  const file = resolve(nodeModules, path);
  if (!file.startsWith(nodeModules + sep) || !existsSync(file)) {
    return { error: `import not found: ${path} (looked at ${relative(repoRoot, file)}; run npm ci)` };
  }
  return { contents: readFileSync(file, "utf8") };
}

const input = {
  language: "Solidity",
  sources,
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: EVM_VERSION,
    outputSelection: {
      "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] },
    },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImports }));
const diagnostics = output.errors ?? [];
const errors = diagnostics.filter((d) => d.severity === "error");
for (const d of diagnostics.filter((d) => d.severity !== "error")) {
  console.warn(d.formattedMessage ?? d.message);
}
if (errors.length > 0) {
  for (const e of errors) console.error(e.formattedMessage ?? e.message);
  console.error(`build.mjs: solc ${solc.version()} reported ${errors.length} error(s); nothing written`);
  process.exit(1);
}

mkdirSync(buildDir, { recursive: true });
for (const name of CONTRACTS) {
  const compiled = output.contracts?.[`contracts/${name}.sol`]?.[name];
  const bytecode = compiled?.evm?.bytecode?.object;
  const deployed = compiled?.evm?.deployedBytecode?.object;
  if (!bytecode || !deployed) {
    console.error(`build.mjs: no bytecode for ${name} (abstract contract or wrong name?)`);
    process.exit(1);
  }
  const artifact = {
    contractName: name,
    compiler: solc.version(),
    abi: compiled.abi,
    bytecode: `0x${bytecode}`,
    deployedBytecode: `0x${deployed}`,
  };
  const target = join(buildDir, `${name}.json`);
  writeFileSync(target, `${JSON.stringify(artifact, null, 2)}\n`);
  console.log(`wrote ${relative(repoRoot, target)} (${deployed.length / 2} bytes runtime, evm ${EVM_VERSION})`);
}
