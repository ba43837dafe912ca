// The frozen ABI (provider/impl.ts): every release's shim text, stored in
// users' state, calls "pulumi-libvirt-snapshots/impl" by package name. The
// texts are pinned here (test/fixtures/shims/RELEASE/*.txt), and every method
// any of them calls must exist on today's impl. A shim text that changes, or a
// method that goes, breaks stacks that were written before: this test fails first.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import type * as pulumi from "@pulumi/pulumi";
import * as pkg from "pulumi-libvirt-snapshots";
import { PACKAGE_ROOT, serializeProvider } from "../harness/engine";
import type { RecordedState } from "../upgrade/record";

const SHIMS = path.join(PACKAGE_ROOT, "test", "fixtures", "shims");
const TYPES = ["DomainSnapshot", "DomainCheckpoint", "SnapshotRevert", "RestorePoint", "DomainBackup"] as const;
/** The resource types a release shipped: those with a pinned shim text. */
const typesOf = (release: string) => TYPES.filter((t) => fs.existsSync(path.join(SHIMS, release, `${t}.txt`)));
const releases = fs
    .readdirSync(SHIMS)
    .filter((d) => d !== "current")
    .sort();
const shimText = (release: string, type: string) => fs.readFileSync(path.join(SHIMS, release, `${type}.txt`), "utf8");

/** Every `impl` call in a shim text, as "resource.method" (or "configure"). */
function callsOf(text: string): string[] {
    const calls = new Set<string>();
    // The factory's shims name their resource in the serialized closure environment.
    const captured = /with\(\{ resource: "(\w+)"/.exec(text)?.[1];
    for (const m of text.matchAll(/require\("pulumi-libvirt-snapshots\/impl"\)(?:\.(\w+)|\[resource\])(?:\.(\w+))?\(/g)) {
        if (m[1] === "configure" && !m[2]) calls.add("configure");
        else calls.add(`${m[1] ?? captured}.${m[2]}`);
    }
    return [...calls].sort();
}

describe("the frozen ABI", () => {
    const impl = require("pulumi-libvirt-snapshots/impl") as Record<string, unknown>;
    const METHODS = ["check", "create", "delete", "diff", "read", "update"];

    it("impl exports exactly configure and one object per resource, with no test counters", () => {
        assert.deepEqual(
            Object.keys(impl)
                .filter((k) => k !== "__esModule")
                .sort(),
            ["backup", "checkpoint", "configure", "restorePoint", "revert", "snapshot"],
        );
        assert.equal(typeof impl.configure, "function");
        for (const r of ["snapshot", "checkpoint", "revert", "restorePoint", "backup"]) {
            assert.deepEqual(Object.keys(impl[r] as object).sort(), METHODS, r);
        }
    });

    it("today's shims serialize to the pinned text (test/fixtures/shims/current)", async function () {
        // Five serializations on a shared, busy machine can pass mocha's default 2 s.
        this.timeout(30_000);
        assert.deepEqual(typesOf("current"), [...TYPES], "every resource type has a pinned shim text");
        for (const type of TYPES) {
            const text = await serializeProvider((pkg as unknown as Record<string, pulumi.dynamic.ResourceProvider>)[`${type}Provider`]!);
            assert.equal(
                text,
                shimText("current", type),
                `${type}Provider's text changed. Users' state will hold it for ever: if that is meant, keep every older text and pin this one too`,
            );
        }
    });

    it("the shims of 0.1.0 are pinned, and are the very texts its recorded state holds", () => {
        assert.ok(releases.includes("0.1.0"), `releases: ${releases.join(", ")}`);
        const rec = JSON.parse(
            fs.readFileSync(path.join(PACKAGE_ROOT, "test", "fixtures", "state", "0.1.0.json"), "utf8"),
        ) as RecordedState;
        for (const r of rec.resources) assert.equal(r.outs.__provider, shimText("0.1.0", r.type), r.type);
    });

    for (const release of [...releases, "current"]) {
        it(`every method the ${release} shims call exists on today's impl`, () => {
            const expected: Record<string, string> = {
                DomainSnapshot: "snapshot",
                DomainCheckpoint: "checkpoint",
                SnapshotRevert: "revert",
                RestorePoint: "restorePoint",
                DomainBackup: "backup",
            };
            for (const type of typesOf(release)) {
                const calls = callsOf(shimText(release, type));
                assert.deepEqual(calls, ["configure", ...METHODS.map((m) => `${expected[type]}.${m}`)].sort(), `${release} ${type}`);
                for (const c of calls) {
                    const [resource, method] = c.split(".") as [string, string | undefined];
                    const fn = method === undefined ? impl[resource] : (impl[resource] as Record<string, unknown> | undefined)?.[method];
                    assert.equal(typeof fn, "function", `${release} ${type} calls impl.${c}`);
                }
            }
        });
    }
});
