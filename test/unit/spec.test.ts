// Each resource's spec is the one home of its inputs. What a user reads elsewhere is checked against it: the Args
// interfaces' members and doc comments (provider/index.ts, as a user's editor shows them), and the README's input
// table and its sentences on what replaces and what updates in place.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import * as ts from "typescript";
import type { Field, Spec } from "../../provider/spec";
import { DomainBackupSpec } from "../../provider/resources/domainBackup";
import { DomainCheckpointSpec } from "../../provider/resources/domainCheckpoint";
import { DomainSnapshotSpec } from "../../provider/resources/domainSnapshot";
import { RestorePointSpec } from "../../provider/resources/restorePoint";
import { SnapshotRevertSpec } from "../../provider/resources/snapshotRevert";

const ROOT = path.resolve(__dirname, "../../..");
const specs: Array<[string, Spec<Record<string, Field>>]> = [
    ["DomainSnapshot", DomainSnapshotSpec],
    ["DomainCheckpoint", DomainCheckpointSpec],
    ["SnapshotRevert", SnapshotRevertSpec],
    ["RestorePoint", RestorePointSpec],
    ["DomainBackup", DomainBackupSpec],
];

/** Each `…Args` interface of index.ts: its members and their doc comments, lines joined as an editor shows them. */
function argsDocs(): Map<string, Map<string, string>> {
    const file = path.join(ROOT, "provider/index.ts");
    const src = ts.createSourceFile(file, fs.readFileSync(file, "utf8"), ts.ScriptTarget.Latest, true);
    const out = new Map<string, Map<string, string>>();
    src.forEachChild((n) => {
        if (!ts.isInterfaceDeclaration(n) || !n.name.text.endsWith("Args")) return;
        const members = new Map<string, string>();
        for (const m of n.members) {
            const doc = ts
                .getJSDocCommentsAndTags(m)
                .map((d) => ts.getTextOfJSDocComment(d.comment) ?? "")
                .join(" ");
            members.set(m.name!.getText(src), doc.replace(/\s+/g, " ").trim());
        }
        out.set(n.name.text, members);
    });
    return out;
}

/** The README's section of one resource: from its `## Name` heading to the next `## `. */
function section(readme: string, name: string): string {
    const start = readme.indexOf(`\n## ${name}\n`);
    assert.ok(start >= 0, `README has no section '## ${name}'`);
    const end = readme.indexOf("\n## ", start + 1);
    return readme.slice(start, end < 0 ? undefined : end);
}

const ticked = (text: string) => [...text.matchAll(/`([A-Za-z]+)`/g)].map((m) => m[1]!);
const sorted = (xs: Iterable<string>) => [...xs].sort();

/** The input names in the first column of the section's input table. */
function tableInputs(text: string): string[] {
    const lines = text.split("\n");
    const head = lines.findIndex((l) => l.startsWith("| input |"));
    assert.ok(head >= 0, "no input table");
    const rows = [];
    for (let i = head + 2; i < lines.length && lines[i]!.startsWith("|"); i++)
        rows.push(lines[i]!.split("|")[1]!.replace(/\([^)]*\)/g, ""));
    return rows.flatMap(ticked);
}

/** The sentence of the section's prose (each line a paragraph or a list item; tables and code left out) that contains `marker`. */
function sentence(text: string, marker: RegExp): string {
    let code = false;
    const prose = text.split("\n").filter((l) => {
        if (l.startsWith("```")) code = !code;
        return !code && !l.startsWith("|") && !l.startsWith("```");
    });
    const found = prose.flatMap((l) => l.split(/(?<=[.;]) (?=[A-Z`])/)).find((s) => marker.test(s));
    assert.ok(found, `no sentence matching ${marker}`);
    return found;
}

describe("each resource's spec is the one home of its inputs", () => {
    const docs = argsDocs();
    const readme = fs.readFileSync(path.join(ROOT, "README.md"), "utf8");

    for (const [name, spec] of specs) {
        const fields = Object.keys(spec.fields);

        it(`${name}: ${name}Args has exactly the spec's inputs, each with the spec's doc word for word`, () => {
            const args = docs.get(`${name}Args`);
            assert.ok(args, `no ${name}Args in provider/index.ts`);
            assert.deepEqual(sorted(args.keys()), sorted(fields));
            for (const [k, f] of Object.entries(spec.fields)) assert.equal(args.get(k), f.doc, `${name}Args.${k}`);
        });

        it(`${name}: the README's input table names exactly the spec's inputs`, () => {
            assert.deepEqual(sorted(new Set(tableInputs(section(readme, name)))), sorted(fields));
        });

        it(`${name}: the README says what replaces and what updates in place, as the spec does`, () => {
            const text = section(readme, name);
            const replacing = sentence(text, /replaces on a change|replaces the|reverts again/);
            assert.deepEqual(sorted(new Set(ticked(replacing))), sorted(spec.replaceKeys));
            const updating = sentence(text, /update(d)? in place|recorded without reverting/);
            assert.deepEqual(sorted(new Set(ticked(updating))), sorted(spec.updateKeys));
            const members = fields.filter((k) => spec.fields[k]!.onChange === "members");
            if (members.length) assert.deepEqual(sorted(ticked(sentence(text, /adds or removes members/))), sorted(members));
        });
    }

    it("the key lists follow the fields: every input is in exactly one of replace, update, place or members", () => {
        for (const [name, spec] of specs) {
            for (const [k, f] of Object.entries(spec.fields)) {
                const lists = [spec.replaceKeys.includes(k), spec.updateKeys.includes(k), f.onChange === "place", f.onChange === "members"];
                assert.equal(lists.filter(Boolean).length, 1, `${name}.${k}`);
            }
            assert.deepEqual(
                Object.entries(spec.fields)
                    .filter(([, f]) => f.onChange === "place")
                    .map(([k]) => k),
                ["connection"],
                `${name}: only the connection decides the place`,
            );
        }
    });
});
