// The compatibility table in the README is what the suites saw. A test that
// asks libvirt something directly records the answer with observe() (the rows
// are in scripts/compat-rows.cjs); the root
// hook compares every answer of the run with the README's cell for this host
// (a mismatch fails the run) and keeps them in .lab/compat/HOST.json, from which
// `npm run compat-table` writes the table. A partial run checks only what it saw
// and never rewrites the table.
import * as fs from "node:fs";
import * as path from "node:path";
import { currentHostName, loadLab, repoRoot } from "./lab";

// The rows, shared with the generator: [key, label, read cell].
const { ROWS } = require(path.join(repoRoot(), "scripts", "compat-rows.cjs")) as { ROWS: Array<[string, string, string]> };
export type Feature =
    | "internal-offline-with-checkpoints"
    | "external-offline-with-checkpoints"
    | "internal-running-name-with-space"
    | "external-nonleaf-delete-offline"
    | "external-revert"
    | "checkpoint-create-offline"
    | "checkpoint-delete-offline"
    | "external-delete-after-internal-revert"
    | "chain-26-images-start"
    | "uefi-internal-running-raw-nvram"
    | "uefi-internal-running-qcow2-nvram"
    | "uefi-internal-offline-raw-nvram"
    | "uefi-auto-internal-offline"
    | "uefi-external"
    | "block-internal-raw"
    | "block-internal-qcow2"
    | "block-external-unnamed"
    | "block-external"
    | "tpm-internal"
    | "tpm-external-memory"
    | "tpm-external-disk-only";
const LABELS = new Map(ROWS.map(([k, label]) => [k, label]));

export type Outcome = "works" | "refused";

const seen = new Map<Feature, Outcome>();

export function observe(feature: Feature, outcome: Outcome): void {
    if (!LABELS.has(feature)) throw new Error(`compat: no row '${feature}' in scripts/compat-rows.cjs`);
    const before = seen.get(feature);
    if (before && before !== outcome) throw new Error(`compat: '${feature}' was seen as ${before} and as ${outcome} in one run`);
    seen.set(feature, outcome);
}

const BEGIN = "<!-- compat-table:begin -->";
const END = "<!-- compat-table:end -->";

/** The README's cells, by feature and column heading ("9.0.0 (debian12)"). */
function readmeTable(): Map<string, Map<string, string>> {
    const text = fs.readFileSync(path.join(repoRoot(), "README.md"), "utf8");
    const body = text.slice(text.indexOf(BEGIN) + BEGIN.length, text.indexOf(END));
    const rows = body.split("\n").filter((l) => l.startsWith("|"));
    const cells = (l: string) =>
        l
            .split("|")
            .slice(1, -1)
            .map((c) => c.trim());
    const head = cells(rows[0] ?? "|");
    const out = new Map<string, Map<string, string>>();
    for (const l of rows.slice(2)) {
        const c = cells(l);
        const label = c[0]!;
        const feature = ROWS.find(([, l]) => l === label)?.[0];
        if (feature) out.set(feature, new Map(head.slice(1).map((h, i) => [h, c[i + 1] ?? ""])));
    }
    return out;
}

function columnOf(version: string, host: string): string {
    return `${version} (${host}, measured)`;
}

export const mochaHooks = {
    afterAll(this: unknown) {
        if (!seen.size) return;
        const lab = loadLab();
        const host = currentHostName();
        const dir = path.join(lab.labDir, "compat");
        fs.mkdirSync(dir, { recursive: true });
        const file = path.join(dir, `${host}.json`);
        const previous = fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, Outcome>) : {};
        const now = { ...previous, ...Object.fromEntries(seen) };
        fs.writeFileSync(file, JSON.stringify(now, null, 2) + "\n");
        const table = readmeTable();
        const col = columnOf(lab.libvirtVersion, host);
        const wrong: string[] = [];
        for (const [f, outcome] of seen) {
            const cell = table.get(f)?.get(col);
            if (cell === undefined || !cell.startsWith(outcome))
                wrong.push(`'${LABELS.get(f)}': the suite saw '${outcome}', the README says '${cell ?? "(no cell)"}'`);
        }
        if (wrong.length) {
            throw new Error(
                `the README's compatibility table no longer matches what libvirt ${lab.libvirtVersion} did:\n  ${wrong.join("\n  ")}\n` +
                    `After a full run on every host: npm run compat-table`,
            );
        }
        console.log(`  compatibility table: ${seen.size} cells of column '${col}' match what the suite saw`);
    },
};
