// `npm run quickstart` where the Node.js language host is missing (the Go module proxy refuses it here):
// the quickstart program (examples/quickstart/index.ts, compiled to .build/examples/quickstart/index.js)
// run by the real Pulumi CLI as an INLINE Automation API program. The CLI's engine plans, starts the
// dynamic-provider plugin and keeps the state; this process serves the program instead of a language
// host. It is not `pulumi up` of the project directory, and says so.
//
//   node .build/test/support/quickstart-inline.js
//
// It runs `pulumi preview`, `pulumi up` and `pulumi destroy` of the stack "quickstart-inline", printing
// what the CLI printed, with a local file backend and a passphrase under .lab/ (PULUMI_HOME too).
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { loadLab, repoRoot } from "./lab";
import { cliEnv, inlineStack, labStackConfig, pulumiCli } from "./pulumiCli";

async function main(): Promise<void> {
    const lab = loadLab();
    const cli = pulumiCli(lab);
    const root = repoRoot();
    const base = path.join(root, ".lab", "quickstart-inline");
    for (const d of ["work", "state", "home"]) fs.mkdirSync(path.join(base, d), { recursive: true, mode: 0o700 });
    const passFile = path.join(base, "passphrase");
    if (!fs.existsSync(passFile)) fs.writeFileSync(passFile, crypto.randomBytes(18).toString("base64url"), { mode: 0o600 });
    Object.assign(process.env, cliEnv(cli.bin, base, fs.readFileSync(passFile, "utf8")));
    const programFile = path.join(root, ".build", "examples", "quickstart", "index.js");
    // The example's own module, loaded afresh on every run of the program (preview, then up).
    const program = async () => {
        delete require.cache[require.resolve(programFile)];
        return { ...(require(programFile) as Record<string, unknown>) };
    };
    const stack = await inlineStack("libvirt-snapshots-quickstart", "quickstart-inline", path.join(base, "work"), program);
    await stack.setAllConfig(labStackConfig(lab, fs.readFileSync(lab.privateKeyPath, "utf8")));
    const onOutput = (s: string) => process.stdout.write(s);
    const say = (s: string) => console.log(`\n==== ${s} ====\n`);
    say(`pulumi preview (inline program: examples/quickstart/index.ts, CLI ${cli.version} at ${cli.bin})`);
    await stack.preview({ onOutput, color: "never" });
    say("pulumi up (inline)");
    await stack.up({ onOutput, color: "never" });
    say("pulumi destroy (inline)");
    await stack.destroy({ onOutput, color: "never" });
}

main().catch((e) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
});
