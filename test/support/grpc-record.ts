// Records, with PULUMI_DEBUG_GRPC, the calls the real Pulumi engine makes to our dynamic provider during one CLI
// operation, as their shapes only (test/support/grpcShape.ts: fields and property names, never a value). The log
// holds decrypted inputs, the private key among them: it is created 0600 in the stack's 0700 folder under .lab/cli/,
// read here, and removed before this returns, also on failure; it is never printed. test/engineParity.test.ts
// compares what this records with what test/harness/engine.ts does (issue #22).
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { callsOfDebugLog, type CallShape } from "./grpcShape";
import type { CliStack, Op, OpResult, ProgramSpec } from "./pulumiCli";

/** Runs OP on PROGRAM with the CLI (it must succeed) and returns, besides its result, the provider calls it made. */
export async function recordProviderCalls(s: CliStack, op: Op, program: ProgramSpec): Promise<{ result: OpResult; calls: CallShape[] }> {
    const log = path.join(s.dir, `grpc-${crypto.randomBytes(6).toString("hex")}.log`);
    // `wx`: a file of that name that is already there (a link someone planted) is an error, not something to write to.
    fs.writeFileSync(log, "", { mode: 0o600, flag: "wx" });
    try {
        const result = await s.ok(op, program, { debugGrpcLog: log });
        // The CLI appends to the file it was given; had it made a new one, its mode would be the CLI's to choose.
        const mode = fs.statSync(log).mode & 0o777;
        if (mode !== 0o600) throw new Error(`the PULUMI_DEBUG_GRPC log's mode became ${mode.toString(8)}, not 600`);
        return { result, calls: callsOfDebugLog(fs.readFileSync(log, "utf8")) };
    } finally {
        fs.rmSync(log, { force: true });
    }
}
