// The converter from a recorded state to a deployment for `pulumi stack import`
// (test/upgrade/toDeployment.ts). test/upgradeCli.test.ts imports its output into the real CLI.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { PACKAGE_ROOT, PROVIDER_KEY } from "../harness/engine";
import type { RecordedState } from "../upgrade/record";
import { SECRET_SIG, SECRET_SIG_KEY, toDeployment } from "../upgrade/toDeployment";

const STATE_DIR = path.join(PACKAGE_ROOT, "test", "fixtures", "state");
const records = fs
    .readdirSync(STATE_DIR)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => [f, JSON.parse(fs.readFileSync(path.join(STATE_DIR, f), "utf8")) as RecordedState] as const);
const target = { project: "upgrade-cli", stack: "debian12", providerId: "0b2b6e1e-0000-4000-8000-00000000abcd" };
const PROVIDER = "urn:pulumi:debian12::upgrade-cli::pulumi:providers:pulumi-nodejs::default";
const STACK = "urn:pulumi:debian12::upgrade-cli::pulumi:pulumi:Stack::upgrade-cli-debian12";

describe("toDeployment: a recorded state as a deployment for pulumi stack import", () => {
    assert.ok(records.length >= 2, "the recordings of 0.1.0 (both hosts)");
    for (const [file, rec] of records) {
        it(`${file}: the stack, the default provider, then each resource in creation order, as recorded`, () => {
            const d = toDeployment(rec, target);
            assert.equal(d.version, 3);
            assert.equal(d.deployment.secrets_providers, undefined, "no secret in the record: no secrets provider needed");
            const [stack, provider, ...res] = d.deployment.resources;
            assert.deepEqual(stack, { urn: STACK, custom: false, type: "pulumi:pulumi:Stack" });
            assert.deepEqual(provider, {
                urn: PROVIDER,
                custom: true,
                id: target.providerId,
                type: "pulumi:providers:pulumi-nodejs",
                inputs: {},
                outputs: {},
            });
            assert.deepEqual(
                res.map((r) => r.urn),
                rec.resources.map((r) => `urn:pulumi:debian12::upgrade-cli::${r.urn.split("::")[2]}::${r.name}`),
                "the type token the harness recorded (what the classes register), in this stack",
            );
            for (const [i, r] of rec.resources.entries()) {
                const got = res[i]!;
                assert.equal(got.type, `pulumi-nodejs:dynamic/libvirt-snapshots:${r.type}`);
                assert.equal(got.id, r.id);
                assert.equal(got.custom, true);
                assert.equal(got.parent, STACK);
                assert.equal(got.provider, `${PROVIDER}::${target.providerId}`);
                assert.deepEqual(got.inputs, r.inputs, `${r.name}: the inputs as recorded`);
                assert.deepEqual(got.outputs, r.outs, `${r.name}: the outputs as recorded`);
                assert.match(String(got.inputs?.[PROVIDER_KEY]), /require\("pulumi-libvirt-snapshots\/impl"\)/);
            }
            const urnOfName = (n: string) => res.find((r) => r.urn.endsWith(`::${n}`))!.urn;
            assert.deepEqual(Object.fromEntries(res.map((r) => [r.urn.split("::").pop(), r.dependencies])), {
                snap: [],
                ckpt: [],
                revert: [urnOfName("snap")],
                rp: [urnOfName("revert")],
            });
            assert.deepEqual(Object.fromEntries(res.map((r) => [r.urn.split("::").pop(), r.additionalSecretOutputs])), {
                snap: ["connection"],
                ckpt: ["connection"],
                revert: ["connection"],
                rp: ["connection", "targets"],
            });
        });
    }

    describe("secrets", () => {
        const [, rec] = records[0]!;
        const connection = {
            host: "192.0.2.1",
            user: "root",
            privateKey: "-----BEGIN KEY-----\nnot-a-real-key-0123456789\n-----END KEY-----",
        };
        const withConnection: RecordedState = {
            ...rec,
            resources: rec.resources.map((r) =>
                r.name === "snap" ? { ...r, inputs: { ...r.inputs, connection }, outs: { ...r.outs, connection } } : r,
            ),
        };

        it("a connection in the record is a secret for import, in plain text the CLI encrypts with the stack's secrets provider", () => {
            const sp = { type: "passphrase", state: { salt: "v1:abc" } };
            const d = toDeployment(withConnection, { ...target, secretsProviders: sp });
            assert.deepEqual(d.deployment.secrets_providers, sp);
            const snap = d.deployment.resources.find((r) => r.urn.endsWith("::snap"))!;
            for (const side of [snap.inputs!, snap.outputs!]) {
                assert.deepEqual(side.connection, { [SECRET_SIG_KEY]: SECRET_SIG, plaintext: JSON.stringify(connection) });
            }
            // Nowhere else.
            const text = JSON.stringify(d);
            assert.equal(text.split("not-a-real-key-0123456789").length - 1, 2, "the key is only in the two secrets");
        });

        it("a secret envelope the harness kept (gRPC form) becomes one for import too", () => {
            const wrapped: RecordedState = {
                ...rec,
                resources: rec.resources.map((r) =>
                    r.name === "rp" ? { ...r, outs: { ...r.outs, nested: { x: { [SECRET_SIG_KEY]: SECRET_SIG, value: "s3cret" } } } } : r,
                ),
            };
            const d = toDeployment(wrapped, { ...target, secretsProviders: { type: "passphrase", state: {} } });
            const rp = d.deployment.resources.find((r) => r.urn.endsWith("::rp"))!;
            assert.deepEqual(rp.outputs!.nested, { x: { [SECRET_SIG_KEY]: SECRET_SIG, plaintext: '"s3cret"' } });
        });

        it("the stack's config is the default provider's inputs and outputs, as the engine keeps it for a dynamic provider; secret values as secrets", () => {
            const config = {
                "libvirt-snapshots:host": { value: "192.0.2.1" },
                "libvirt-snapshots:port": { value: "22", secret: false },
                "libvirt-snapshots:privateKey": { value: "not-a-real-key-0123456789", secret: true },
            };
            assert.throws(() => toDeployment(rec, { ...target, config }), /would hold 2 secret\(s\)/);
            const d = toDeployment(rec, { ...target, config, secretsProviders: { type: "passphrase", state: {} } });
            const provider = d.deployment.resources[1]!;
            const want = {
                "libvirt-snapshots:host": "192.0.2.1",
                "libvirt-snapshots:port": "22",
                "libvirt-snapshots:privateKey": { [SECRET_SIG_KEY]: SECRET_SIG, plaintext: '"not-a-real-key-0123456789"' },
            };
            assert.deepEqual(provider.inputs, want);
            assert.deepEqual(provider.outputs, want);
        });

        it("refuses a record that holds a secret without the stack's secrets provider (the CLI could not encrypt it)", () => {
            assert.throws(() => toDeployment(withConnection, target), /would hold 2 secret\(s\): give the stack's secrets provider/);
        });
    });

    it("refuses a resource the upgrade scenario does not declare", () => {
        const [, rec] = records[0]!;
        const odd: RecordedState = { ...rec, resources: [{ ...rec.resources[0]!, name: "other" }] };
        assert.throws(() => toDeployment(odd, target), /other \(DomainSnapshot\) is not a resource of the upgrade scenario/);
    });
});
