#!/usr/bin/env node
// Syntax check for Bicep files without the Bicep CLI (which cannot be
// installed here): parse each file with the tree-sitter Bicep grammar and
// report the first ERROR or MISSING node as file:line:col.
//
// This catches what a typo does to a template (an unclosed brace, a missing
// value, a stray token). It does not type-check, resolve symbols or run the
// Bicep linter; infra/infra_test.go holds the templates against the code.
//
// Usage: node infra/check/bicep-parse.js FILE_OR_DIR...
// Exit status: 0 every file parses, 1 a file has a syntax error, 2 usage or
// tooling problem (the grammar is not installed).
//
// The grammar is looked up in BICEP_TOOLS_DIR (default .tools/bicep at the
// repository root), where the Makefile installs it:
//   npm install --no-save --no-package-lock --ignore-scripts --prefix .tools/bicep \
//     tree-sitter-bicep@1.1.0 web-tree-sitter@0.24.7
'use strict';

const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const toolsDir = process.env.BICEP_TOOLS_DIR || path.resolve(__dirname, '..', '..', '.tools', 'bicep');

function load(name) {
  try {
    return createRequire(path.join(toolsDir, 'package.json'))(name);
  } catch (e) {
    return require(name); // installed some other way (NODE_PATH, global)
  }
}

// bicepFiles expands directories into the .bicep files below them, sorted so
// the report is stable.
function bicepFiles(args) {
  const out = [];
  for (const arg of args) {
    const st = fs.statSync(arg);
    if (!st.isDirectory()) {
      out.push(arg);
      continue;
    }
    for (const entry of fs.readdirSync(arg, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(arg, entry.name);
      if (entry.isDirectory()) out.push(...bicepFiles([p]));
      else if (entry.name.endsWith('.bicep')) out.push(p);
    }
  }
  return out;
}

// firstProblem returns the first ERROR or MISSING node in document order.
function firstProblem(node) {
  if (node.isError || node.isMissing) return node;
  if (!node.hasError) return null;
  for (let i = 0; i < node.childCount; i++) {
    const found = firstProblem(node.child(i));
    if (found) return found;
  }
  return node; // hasError without a marked descendant: blame the node itself
}

function describe(node) {
  if (node.isMissing) return `missing ${JSON.stringify(node.type)}`;
  const text = node.text.split('\n')[0].slice(0, 40);
  return `unexpected ${JSON.stringify(text)}`;
}

async function main(args) {
  if (args.length === 0) {
    process.stderr.write('usage: bicep-parse.js FILE_OR_DIR...\n');
    return 2;
  }
  let Parser, wasm;
  try {
    Parser = load('web-tree-sitter');
    wasm = createRequire(path.join(toolsDir, 'package.json')).resolve('tree-sitter-bicep/tree-sitter-bicep.wasm');
  } catch (e) {
    process.stderr.write(`bicep-parse: the Bicep grammar is not installed in ${toolsDir} (${e.code || e.message}); ` +
      'run: npm install --no-save --no-package-lock --ignore-scripts --prefix .tools/bicep tree-sitter-bicep@1.1.0 web-tree-sitter@0.24.7\n');
    return 2;
  }
  await Parser.init();
  const parser = new Parser();
  parser.setLanguage(await Parser.Language.load(wasm));

  let files;
  try {
    files = bicepFiles(args);
  } catch (e) {
    process.stderr.write(`bicep-parse: ${e.message}\n`);
    return 2;
  }
  if (files.length === 0) {
    process.stderr.write(`bicep-parse: no .bicep files in ${args.join(' ')}\n`);
    return 2;
  }
  let failed = 0;
  for (const file of files) {
    const tree = parser.parse(fs.readFileSync(file, 'utf8'));
    const bad = firstProblem(tree.rootNode);
    if (bad) {
      failed++;
      const { row, column } = bad.startPosition;
      process.stdout.write(`${file}:${row + 1}:${column + 1}: syntax error: ${describe(bad)}\n`);
    }
    tree.delete();
  }
  if (failed === 0) process.stdout.write(`bicep-parse: ${files.length} files parse\n`);
  return failed === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (e) => {
  process.stderr.write(`bicep-parse: ${e.stack || e}\n`);
  process.exitCode = 2;
});
