// The package as users get it: `npm pack`, the tarball installed into a fresh
// folder outside the checkout (no workspace link), the provider serialized by
// that folder's own @pulumi/pulumi, and that folder's dynamic-provider server
// running it. The shim's require("pulumi-libvirt-snapshots/impl") then
// resolves as it does in a user's project.
import * as assert from "node:assert/strict";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DYNAMIC_TYPE, PACKAGE_ROOT, PROVIDER_KEY } from "./harness/engine";
import { engineSuite } from "./support/fixture";
import { snapshotNames } from "./support/helpers";
import { run } from "./support/lab";

const PKG = "pulumi-libvirt-snapshots";

/** Runs node in the app folder, as the user's program would. */
async function nodeIn(app: string, script: string): Promise<string> {
    const r = await run(process.execPath, ["-e", script], { cwd: app, timeoutMs: 60_000 });
    assert.equal(r.code, 0, `node -e failed in ${app}:\n${r.stderr}`);
    return r.stdout;
}

describe("packaging: the npm tarball installed as a user installs it", function () {
    this.timeout(300_000);
    let tmp: string, app: string, tarball: string;
    let packed: Array<{ path: string }>;

    before(async function () {
        tmp = fs.mkdtempSync(path.join(os.tmpdir(), "plvs-pack-"));
        const pack = await run("npm", ["pack", "--json", "--pack-destination", tmp], { cwd: PACKAGE_ROOT, timeoutMs: 120_000 });
        assert.equal(pack.code, 0, pack.stderr);
        const info = (JSON.parse(pack.stdout) as Array<{ filename: string; files: Array<{ path: string }> }>)[0]!;
        tarball = path.join(tmp, path.basename(info.filename));
        packed = info.files;
        app = path.join(tmp, "app");
        fs.mkdirSync(app);
        fs.writeFileSync(path.join(app, "package.json"), JSON.stringify({ name: "user-app", version: "1.0.0", private: true }));
        // Dependencies come from the npm cache that `npm ci` filled; the registry only for what it lacks.
        const inst = await run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", "--no-package-lock", tarball], {
            cwd: app,
            timeoutMs: 280_000,
        });
        assert.equal(inst.code, 0, `npm install of the tarball failed:\n${inst.stdout}\n${inst.stderr}`);
    });
    // Registered after the install, so the app's own server runs the shims, from the app's folder.
    const suite = engineSuite("labtmp-pack-", () => ({
        cwd: app,
        serverScript: path.join(app, "node_modules", "@pulumi", "pulumi", "cmd", "dynamic-provider", "index.js"),
        env: { NODE_PATH: "" },
    }));
    after(() => {
        if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
    });

    it("ships the compiled package only: no sources, tests or lab files", () => {
        const paths = packed.map((f) => f.path);
        assert.ok(paths.includes("dist/index.js") && paths.includes("dist/impl.js") && paths.includes("dist/index.d.ts"), paths.join(", "));
        // Source maps stay: they give stack traces the .ts line numbers.
        const stray = paths.filter((p) => !/^(dist\/.*\.(js|js\.map|d\.ts)|package\.json|README\.md|LICENSE)$/.test(p));
        assert.deepEqual(stray, [], "files outside dist/");
    });

    it("resolves the package and its impl from the app's own node_modules, a real copy, and exports nothing internal", async () => {
        const out = JSON.parse(
            await nodeIn(
                app,
                `
            const r = (s) => { try { return require.resolve(s); } catch (e) { return e.code; } };
            console.log(JSON.stringify({ root: r("${PKG}"), impl: r("${PKG}/impl"), internal: r("${PKG}/dist/resources/domainSnapshot.js"),
                linked: require("fs").lstatSync("node_modules/${PKG}").isSymbolicLink() }));`,
            ),
        ) as Record<string, unknown>;
        assert.equal(out.root, path.join(app, "node_modules", PKG, "dist", "index.js"));
        assert.equal(out.impl, path.join(app, "node_modules", PKG, "dist", "impl.js"));
        assert.equal(out.internal, "ERR_PACKAGE_PATH_NOT_EXPORTED");
        assert.equal(out.linked, false);
        for (let d = path.dirname(app); d !== path.dirname(d); d = path.dirname(d)) {
            assert.equal(fs.existsSync(path.join(d, "node_modules", PKG)), false, `${d}/node_modules would also resolve the package`);
        }
    });

    it("a DomainSnapshot serialized by the app's SDK runs in the app's dynamic-provider server: created on the lab, then deleted", async () => {
        const shim = await nodeIn(
            app,
            `
            const pulumi = require("@pulumi/pulumi");
            // As new pulumi.dynamic.Resource(provider, ...) serializes it (dynamic/index.js).
            const provider = require("${PKG}").DomainSnapshotProvider;
            pulumi.runtime.serializeFunction(() => provider, { allowSecrets: true }).then((sf) => process.stdout.write(sf.text));`,
        );
        assert.equal(
            shim,
            fs.readFileSync(path.join(PACKAGE_ROOT, "test", "fixtures", "shims", "current", "DomainSnapshot.txt"), "utf8"),
            "the shim users store is the golden one",
        );
        const engine = suite.engine;
        const dom = await suite.newDomain();
        const urn = engine.urn(DYNAMIC_TYPE, "packaged");
        const checked = await engine.check(urn, {}, { domain: dom.name, snapshotName: "from-the-tarball", [PROVIDER_KEY]: shim });
        assert.deepEqual(checked.failures, []);
        const { id, outs } = await engine.create(urn, checked.inputs);
        assert.equal(id, `${dom.uuid}/from-the-tarball`);
        assert.equal(outs.kind, "internal");
        assert.deepEqual(await snapshotNames(dom.name), ["from-the-tarball"]);
        const read = await engine.read(urn, id, outs, { inputs: checked.inputs });
        assert.equal(read.id, id);
        await engine.delete(urn, id, outs, { oldInputs: checked.inputs });
        assert.deepEqual(await snapshotNames(dom.name), []);
    });
});
