#!/usr/bin/env node
// Writes the README's compatibility table from what a full test run saw on every
// lab host (.lab/compat/HOST.json, written by test/support/compat.ts), plus one
// column read from libvirt's NEWS for a version the lab can't run. Refuses to
// write from a partial run: every host and every row must have been seen.
//
//   node scripts/compat-table.cjs [--check]     (--check: exit 1 if the README differs)
"use strict";
const fs = require("node:fs");
const path = require("node:path");

const repo = path.resolve(__dirname, "..");
const lab = JSON.parse(fs.readFileSync(path.join(repo, ".lab", "lab.json"), "utf8"));
const { ROWS, READ_COLUMN } = require("./compat-rows.cjs");

const columns = [];
const missing = [];
for (const h of lab.hosts) {
    const file = path.join(repo, ".lab", "compat", `${h.name}.json`);
    const seen = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, "utf8")) : {};
    for (const [key] of ROWS) if (!seen[key]) missing.push(`${h.name}: ${key}`);
    columns.push({ title: `${h.libvirtVersion} (${h.name}, measured)`, seen });
}
if (missing.length) {
    console.error(
        `compat-table: not written, the last runs did not see every cell (run npm test on every host first):\n  ${missing.join("\n  ")}`,
    );
    process.exit(1);
}
const head = ["feature", ...columns.map((c) => c.title)];
head.splice(2, 0, READ_COLUMN);
const lines = [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`];
for (const [key, label, read] of ROWS) {
    const cells = columns.map((c) => c.seen[key]);
    cells.splice(1, 0, read);
    lines.push(`| ${label} | ${cells.join(" | ")} |`);
}
const table = lines.join("\n");

const readmePath = path.join(repo, "README.md");
const readme = fs.readFileSync(readmePath, "utf8");
const BEGIN = "<!-- compat-table:begin -->";
const END = "<!-- compat-table:end -->";
const i = readme.indexOf(BEGIN);
const j = readme.indexOf(END);
if (i < 0 || j < i) {
    console.error(`compat-table: README.md has no ${BEGIN} ... ${END} block`);
    process.exit(1);
}
const next = `${readme.slice(0, i + BEGIN.length)}\n${table}\n${readme.slice(j)}`;
if (process.argv.includes("--check")) {
    if (next !== readme) {
        console.error("compat-table: README.md differs from the last full run; run npm run compat-table");
        process.exit(1);
    }
    console.log("compat-table: README.md matches");
} else {
    fs.writeFileSync(readmePath, next);
    console.log(next === readme ? "compat-table: README.md already matches" : "compat-table: README.md updated");
}
