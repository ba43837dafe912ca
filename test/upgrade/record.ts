// Records what the engine stores for the upgrade scenario, with the code as it
// is now: each resource's urn, id, checked inputs and outputs (both with the
// __provider text the SDK serialized). Run it on a release whose schema
// changed, and keep the file: `npm run record-state` (writes
// test/fixtures/state/<package version>.json for the Debian 12 host, and
// <package version>-<host>.json with LAB_HOST=<host>, where the stack's
// connection is SSH to that host, set in stack config as a user would).
import * as fs from "node:fs";
import * as path from "node:path";
import * as pkg from "pulumi-libvirt-snapshots";
import { EngineHarness, PACKAGE_ROOT, dynamicType, type ResourceState } from "../harness/engine";
import { stackConfigFor } from "../support/fixture";
import { DEFAULT_HOST, loadLab, repoRoot } from "../support/lab";
import { UPGRADE_RESOURCES, upgradeDomains } from "./scenario";

export interface RecordedResource extends ResourceState {
    name: string;
    type: string;
}
export interface RecordedState {
    version: string;
    /** The lab host it was recorded on (absent: the Debian 12 host, as 0.1.0's first recording). */
    host?: string;
    libvirtVersion: string;
    qemuVersion: string;
    resources: RecordedResource[];
}

async function main(): Promise<void> {
    const version = (JSON.parse(fs.readFileSync(path.join(repoRoot(), "package.json"), "utf8")) as { version: string }).version;
    const lab = loadLab();
    const domains = await upgradeDomains();
    const engine = await EngineHarness.start({ cwd: PACKAGE_ROOT, ...stackConfigFor(lab) });
    const made: RecordedResource[] = [];
    try {
        for (const r of UPGRADE_RESOURCES) {
            const provider = (pkg as unknown as Record<string, pulumi.dynamic.ResourceProvider>)[`${r.type}Provider`]!;
            const state = await engine.up(r.name, provider, r.inputs, { type: dynamicType("libvirt-snapshots", r.type) });
            made.push({ name: r.name, type: r.type, ...state });
        }
        const file = path.join(
            repoRoot(),
            "test",
            "fixtures",
            "state",
            lab.name === DEFAULT_HOST ? `${version}.json` : `${version}-${lab.name}.json`,
        );
        const recorded: RecordedState = {
            version,
            host: lab.name,
            libvirtVersion: lab.libvirtVersion,
            qemuVersion: lab.qemuVersion,
            resources: made,
        };
        fs.writeFileSync(file, JSON.stringify(recorded, null, 2) + "\n");
        console.log(`recorded ${made.length} resources of ${version} in ${path.relative(repoRoot(), file)}`);
    } finally {
        for (const r of [...made].reverse())
            await engine.destroy(r).catch((e) => console.error(`destroy ${r.name}: ${(e as Error).message}`));
        await engine.close();
        for (const d of domains) await d.dispose();
    }
}

import type * as pulumi from "@pulumi/pulumi";

main().catch((e) => {
    console.error(e);
    process.exit(1);
});
