// Runs one example program without the Pulumi CLI, as CI and the quickstart's
// fallback do: the program itself runs under pulumi.runtime.setMocks, and the
// mock forwards every dynamic resource (inputs and the SDK-serialized
// __provider) to @pulumi/pulumi's real dynamic-provider server through the
// engine-path harness: Check, then Create, returning the real outputs. At the
// end everything is deleted in reverse order, unless --keep is given.
//
//   node .build/test/support/run-example.js <example dir> <result.json> [--keep] [--config KEY=VALUE ...]
//
// Resources that are not ours (e.g. @pulumi/command's remote.Command) are not
// run: the mock records them and echoes their inputs.
// It is a child process because setMocks' runtime state is global.
import * as fs from "node:fs";
import * as path from "node:path";
import * as pulumi from "@pulumi/pulumi";
import { EngineHarness, PACKAGE_ROOT, transcript } from "../harness/engine";
import { loadLab } from "./lab";

interface Created {
    type: string;
    name: string;
    urn: string;
    id: string;
    outs: Record<string, unknown>;
    ran: boolean;
}

function labConfig(): Record<string, string> {
    const lab = loadLab();
    return {
        "libvirt-snapshots:host": lab.host,
        "libvirt-snapshots:port": String(lab.port),
        "libvirt-snapshots:user": lab.user,
        "libvirt-snapshots:privateKey": fs.readFileSync(lab.privateKeyPath, "utf8"),
        "libvirt-snapshots:hostKey": lab.hostKey,
    };
}

async function main(): Promise<void> {
    const [dirArg, outFile, ...rest] = process.argv.slice(2);
    if (!dirArg || !outFile) throw new Error("usage: run-example <example dir> <result.json> [--keep] [--config KEY=VALUE ...]");
    const dir = path.resolve(dirArg);
    const project = /^name:\s*(\S+)/m.exec(fs.readFileSync(path.join(dir, "Pulumi.yaml"), "utf8"))?.[1] ?? path.basename(dir);
    const keep = rest.includes("--keep");
    const config: Record<string, string> = { ...labConfig() };
    for (let i = 0; i < rest.length; i++) {
        if (rest[i] === "--config") {
            const [k, ...v] = rest[++i]!.split("=");
            config[k!.includes(":") ? k! : `${project}:${k}`] = v.join("=");
        }
    }
    // The provider process runs with the Pulumi project's directory as its cwd, as under `pulumi up`.
    const engine = await EngineHarness.start({ cwd: dir, project, stack: "example", config });
    const created: Created[] = [];
    const pending = new Set<Promise<unknown>>();
    let failure: unknown;
    try {
        pulumi.runtime.setAllConfig(config);
        await pulumi.runtime.setMocks(
            {
                newResource(args) {
                    const work = (async () => {
                        const inputs = args.inputs as Record<string, unknown>;
                        if (!args.type.startsWith("pulumi-nodejs:dynamic")) {
                            created.push({
                                type: args.type,
                                name: args.name,
                                urn: "",
                                id: `${args.name}-not-run`,
                                outs: inputs,
                                ran: false,
                            });
                            return { id: `${args.name}-not-run`, state: inputs };
                        }
                        const urn = engine.urn(args.type, args.name);
                        const checked = await engine.check(urn, {}, inputs);
                        if (checked.failures.length) {
                            throw new Error(`${args.name}: ${checked.failures.map((f) => `${f.property}: ${f.reason}`).join("; ")}`);
                        }
                        const { id, outs } = await engine.create(urn, checked.inputs);
                        created.push({ type: args.type, name: args.name, urn, id, outs, ran: true });
                        return { id, state: outs };
                    })();
                    pending.add(work);
                    work.catch((e) => {
                        failure ??= e;
                    }).finally(() => pending.delete(work));
                    return work;
                },
                call() {
                    return {};
                },
            },
            project,
            "example",
            false,
        );
        const program = require(path.join(PACKAGE_ROOT, ".build", path.relative(PACKAGE_ROOT, dir), "index.js")) as Record<string, unknown>;
        // Settle: every exported output, then no registration in flight for a while.
        for (const v of Object.values(program)) {
            if (pulumi.Output.isInstance(v)) await new Promise((r) => (v as pulumi.Output<unknown>).apply(r));
        }
        for (let quiet = 0; quiet < 5;) {
            await new Promise((r) => setTimeout(r, 100));
            if (pending.size) {
                quiet = 0;
                await Promise.allSettled([...pending]);
            } else quiet++;
        }
        if (failure) throw failure;
        fs.writeFileSync(
            outFile,
            JSON.stringify({ project, created: created.map(({ type, name, id, outs, ran }) => ({ type, name, id, outs, ran })) }, null, 2),
        );
    } catch (e) {
        failure ??= e;
    } finally {
        // What the provider sent back (outputs outside secret markers, errors, logs), for the parent's secrets check.
        process.on("exit", () => {
            try {
                fs.writeFileSync(`${outFile}.transcript`, JSON.stringify(transcript));
            } catch {
                /* best effort */
            }
        });
        if (!keep) {
            for (const c of [...created].reverse()) {
                if (!c.ran) continue;
                try {
                    await engine.delete(c.urn, c.id, c.outs);
                } catch (e) {
                    console.error(`delete of ${c.name} failed: ${(e as Error).message}`);
                    failure ??= e;
                }
            }
        }
        await engine.close();
    }
    if (failure) throw failure;
}

main().then(
    () => process.exit(0),
    (e: unknown) => {
        console.error(e instanceof Error ? e.message : e);
        process.exit(1);
    },
);
